//! A WebTransport client endpoint for the load clients, as a page makes
//! one: the session URL and the certificate's hash from herald's
//! `GET /v1/webtransport` (the certificate made by `--tls-self-signed`).

use std::net::SocketAddr;

use wtransport::endpoint::endpoint_side::Client;
use wtransport::{ClientConfig, Endpoint};

/// One client endpoint (one UDP socket, for every session) trusting the
/// certificate herald at `addr` advertises, and its session URL.
pub async fn client(addr: SocketAddr) -> Result<(Endpoint<Client>, String), String> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| e.to_string())?;
    let advert: serde_json::Value = http
        .get(format!("https://{addr}/v1/webtransport"))
        .send()
        .await
        .map_err(|e| format!("no WebTransport advert: {e}"))?
        .json()
        .await
        .map_err(|e| format!("no WebTransport advert: {e}"))?;
    let (Some(url), Some(hash)) = (
        advert["url"].as_str(),
        advert["certificate_hashes"][0].as_str(),
    ) else {
        return Err(format!("no WebTransport advertised: {advert}"));
    };
    let hash: Vec<u8> = (0..hash.len() / 2)
        .filter_map(|i| u8::from_str_radix(hash.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    let hash = <[u8; 32]>::try_from(hash).map_err(|_| format!("not a SHA-256: {advert}"))?;
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash)])
        .build();
    let endpoint = Endpoint::client(config).map_err(|e| e.to_string())?;
    Ok((endpoint, url.to_owned()))
}
