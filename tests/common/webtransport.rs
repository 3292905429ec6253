//! A WebTransport client of the server under test, as a browser is one:
//! the session URL and the certificate's hash from `GET /v1/webtransport`.

use std::time::Duration;

use serde_json::Value;
use wtransport::endpoint::endpoint_side::Client;
use wtransport::{ClientConfig, Endpoint};

use super::Server;

pub const WAIT: Duration = Duration::from_secs(20);

/// herald with a certificate made at start and WebTransport on a free
/// UDP port, its HTTPS client taking that certificate.
pub async fn start_with(extra: &[&str]) -> Server {
    let mut flags = vec!["--tls-self-signed", "--webtransport-listen", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let mut server = Server::start_with(&flags).await;
    trust_any_certificate(&mut server);
    server
}

pub async fn start() -> Server {
    start_with(&[]).await
}

/// The server's HTTPS client takes the certificate made at start (again
/// after a restart; its hash is what WebTransport checks).
pub fn trust_any_certificate(server: &mut Server) {
    server.http = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
}

/// `GET /v1/webtransport`: the session URL and the certificate's hash.
pub async fn advert(server: &Server) -> (String, [u8; 32]) {
    let response = server
        .http
        .get(server.url("/v1/webtransport"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let url = body["url"].as_str().unwrap().to_owned();
    let hashes = body["certificate_hashes"].as_array().unwrap();
    assert_eq!(hashes.len(), 1, "{body}");
    let hex = hashes[0].as_str().unwrap();
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    (url, bytes.try_into().unwrap())
}

pub fn client(hash: [u8; 32]) -> Endpoint<Client> {
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    Endpoint::client(config).unwrap()
}

/// A session with `query`, and the stream its events come on.
pub async fn open(
    server: &Server,
    query: &str,
) -> (
    Endpoint<Client>,
    wtransport::Connection,
    wtransport::RecvStream,
) {
    let (url, hash) = advert(server).await;
    let endpoint = client(hash);
    let conn = tokio::time::timeout(WAIT, endpoint.connect(format!("{url}?{query}")))
        .await
        .expect("session in time")
        .expect("session accepted");
    let events = tokio::time::timeout(WAIT, conn.accept_uni())
        .await
        .expect("event stream in time")
        .expect("event stream");
    (endpoint, conn, events)
}
