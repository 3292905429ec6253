//! wtransport: accept sessions, open a uni stream, write a hello line, idle.
use std::time::Duration;
use wtransport::{Endpoint, ServerConfig};

#[tokio::main]
async fn main() {
    let mut transport = wtransport::config::QuicTransportConfig::default();
    transport
        .max_concurrent_bidi_streams(8u32.into())
        .max_concurrent_uni_streams(8u32.into());
    let config = ServerConfig::builder()
        .with_bind_address("127.0.0.1:18099".parse().unwrap())
        .with_custom_tls_and_transport(webtransport_crates::tls(&[b"h3"]), transport)
        .max_idle_timeout(Some(Duration::from_secs(45)))
        .unwrap()
        .keep_alive_interval(Some(Duration::from_secs(15)))
        .build();
    let endpoint = Endpoint::server(config).unwrap();
    println!("listening");
    loop {
        let incoming = endpoint.accept().await;
        tokio::spawn(async move {
            let Ok(request) = incoming.await else { return };
            let Ok(conn) = request.accept().await else {
                return;
            };
            let Ok(opening) = conn.open_uni().await else {
                return;
            };
            let Ok(mut stream) = opening.await else {
                return;
            };
            let _ = stream.write_all(b"{\"type\":\"hello\"}\n").await;
            let _ = conn.closed().await;
        });
    }
}
