//! The disk's own speed, printed beside every figure that depends on it
//! (fdatasync swings by 2x from day to day on a shared box).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// p50/p99 of `rounds` 4 KiB writes, each followed by fdatasync, in `dir`.
pub fn fdatasync_figures(dir: &Path, rounds: usize) -> Result<String, String> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("fdatasync probe: {e}"))?;
    let block = [7u8; 4096];
    let mut latencies: Vec<Duration> = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("fdatasync probe: {e}"))?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let _ = std::fs::remove_file(path);
    let at =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    Ok(format!(
        "fdatasync of 4 KiB: p50 {:.2} ms, p99 {:.2} ms ({} rounds)",
        at(0.5),
        at(0.99),
        latencies.len()
    ))
}
