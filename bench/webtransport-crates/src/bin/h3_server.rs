//! quinn + h3 + h3-webtransport: the same.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h3::ext::Protocol;
use h3_webtransport::server::WebTransportSession;
use http::Method;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() {
    let tls = webtransport_crates::tls(&[b"h3"]);
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(8u32.into())
        .max_concurrent_uni_streams(8u32.into());
    transport.max_idle_timeout(Some(Duration::from_secs(45).try_into().unwrap()));
    transport.keep_alive_interval(Some(Duration::from_secs(15)));
    server_config.transport = Arc::new(transport);
    let endpoint =
        quinn::Endpoint::server(server_config, "127.0.0.1:18099".parse().unwrap()).unwrap();
    println!("listening");
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let mut h3: h3::server::Connection<h3_quinn::Connection, Bytes> =
                match h3::server::builder()
                    .enable_webtransport(true)
                    .enable_extended_connect(true)
                    .enable_datagram(true)
                    .max_webtransport_sessions(1)
                    .build(h3_quinn::Connection::new(conn))
                    .await
                {
                    Ok(h3) => h3,
                    Err(_) => return,
                };
            loop {
                match h3.accept().await {
                    Ok(Some(resolver)) => {
                        let Ok((req, stream)) = resolver.resolve_request().await else {
                            continue;
                        };
                        if req.method() == Method::CONNECT
                            && req.extensions().get::<Protocol>() == Some(&Protocol::WEB_TRANSPORT)
                        {
                            let Ok(session) = WebTransportSession::accept(req, stream, h3).await
                            else {
                                return;
                            };
                            let id = session.session_id();
                            let Ok(mut uni) = session.open_uni(id).await else {
                                return;
                            };
                            let _ = uni.write_all(b"{\"type\":\"hello\"}\n").await;
                            // Idle until the peer goes.
                            loop {
                                match session.accept_bi().await {
                                    Ok(Some(_)) => continue,
                                    _ => return,
                                }
                            }
                        }
                    }
                    _ => return,
                }
            }
        });
    }
}
