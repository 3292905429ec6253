//! client PID HASH COUNT: opens COUNT sessions to 127.0.0.1:18099 (25 at a
//! time), waits for each hello, holds them and prints the growth of PID's
//! RSS per session.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}
#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (pid, hex, count) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let hash: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(
            hash.try_into().unwrap(),
        )])
        .build();
    let endpoint = wtransport::Endpoint::client(config).unwrap();
    let before = rss_kib(pid);
    let mut kept = Vec::new();
    let mut failed = 0;
    for chunk in (0..count).collect::<Vec<_>>().chunks(25) {
        let opened = futures::future::join_all(chunk.iter().map(|_| async {
            let conn = endpoint
                .connect("https://127.0.0.1:18099/v1/wt")
                .await
                .map_err(|e| e.to_string())?;
            let mut events = conn.accept_uni().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            events.read(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, events))
        }))
        .await;
        for o in opened {
            match o {
                Ok(s) => kept.push(s),
                Err(e) => {
                    if failed < 3 {
                        eprintln!("{e}")
                    }
                    failed += 1
                }
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = rss_kib(pid);
    println!(
        "{} sessions ({failed} failed): {:.0} B per session",
        kept.len(),
        (after - before) as f64 * 1024.0 / kept.len() as f64
    );
}
