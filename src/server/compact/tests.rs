//! The compact path and hyper must agree on where every request ends: a
//! head the compact path serves is one hyper reads as the same bodiless
//! request, followed by the same next request; anything else the direct
//! path leaves to hyper.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

use super::{read_head, Head};

/// What hyper saw: each request's target and body length, in order, and
/// whether it refused the connection's bytes at some point.
#[derive(Debug, Default)]
struct HyperReading {
    requests: Vec<(String, usize)>,
}

fn hyper_reads(bytes: &[u8]) -> HyperReading {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let seen = Arc::new(Mutex::new(HyperReading::default()));
        let record = seen.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let target = req.uri().to_string();
                let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                if let Ok(len) = body {
                    record.lock().unwrap().requests.push((target, len));
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
            }
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(server), service);
        client.write_all(bytes).await.expect("write");
        client.shutdown().await.expect("half close");
        let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        drop(client);
        Arc::try_unwrap(seen)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    })
}

fn direct_reads(bytes: &[u8]) -> Head {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut reader: &[u8] = bytes;
    runtime.block_on(read_head(&mut reader, Bytes::new()))
}

/// Header lines, some harmless, some that frame a body or bend the syntax.
fn header_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Host: h\r\n".to_owned()),
        Just("Accept: */*\r\n".to_owned()),
        Just("Authorization: Bearer t\r\n".to_owned()),
        Just("Connection: keep-alive\r\n".to_owned()),
        prop_oneof![
            Just("0"),
            Just("47"),
            Just("5"),
            Just(" 0"),
            Just("0,0"),
            Just("+0"),
            Just("00"),
            Just("-1"),
            Just("99999999999999999999999"),
        ]
        .prop_map(|n| format!("Content-Length: {n}\r\n")),
        prop_oneof![
            Just("chunked"),
            Just("identity"),
            Just("chunked, chunked"),
            Just("Chunked"),
            Just("gzip"),
        ]
        .prop_map(|t| format!("Transfer-Encoding: {t}\r\n")),
        Just("X-Fold: a\r\n b\r\n".to_owned()),
        Just("X-Bare: lf\n".to_owned()),
        Just("X-Nul: a\0b\r\n".to_owned()),
        Just("content-length : 0\r\n".to_owned()),
        Just(" Host: folded-first\r\n".to_owned()),
    ]
}

fn request_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET /v1/poll?cursor=0 HTTP/1.1\r\n".to_owned()),
        Just("GET /v1/longpoll HTTP/1.1\r\n".to_owned()),
        Just("GET /v1/sse?cursor=3 HTTP/1.1\r\n".to_owned()),
        Just("GET /v1/poll HTTP/1.1\n".to_owned()),
        Just("GET /v1/poll  HTTP/1.1\r\n".to_owned()),
        Just("GET /v1/poll HTTP/1.0\r\n".to_owned()),
    ]
}

/// What may follow the head: nothing, a chunked body's end, or bytes that
/// a declared length would swallow.
fn after_head() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just(""),
        Just("0\r\n\r\n"),
        Just("hello"),
        Just("5\r\nhello\r\n0\r\n\r\n")
    ]
}

const NEXT: &str = "GET /next HTTP/1.1\r\nHost: h\r\n\r\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_direct_path_and_hyper_agree_on_where_each_request_ends(
        line in request_line(),
        headers in prop::collection::vec(header_line(), 0..5),
        tail in after_head(),
    ) {
        let head = format!("{line}{}\r\n", headers.concat());
        let bytes = format!("{head}{tail}{NEXT}");
        let framing = headers.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            h.starts_with("content-length") || h.starts_with("transfer-encoding")
        });
        match direct_reads(bytes.as_bytes()) {
            Head::Compact { request, rest } => {
                prop_assert!(!framing, "a framing header was served directly: {head:?}");
                // hyper must read the same request, bodiless, and then the
                // request that starts where the compact path's ended.
                let hyper = hyper_reads(bytes.as_bytes());
                prop_assert!(!hyper.requests.is_empty(), "hyper refused what was served: {head:?}");
                prop_assert_eq!(&hyper.requests[0].0, &request.uri().to_string());
                prop_assert_eq!(hyper.requests[0].1, 0);
                let next = hyper_reads(&rest);
                prop_assert_eq!(
                    hyper.requests.get(1).map(|r| &r.0),
                    next.requests.first().map(|r| &r.0),
                    "after {:?} hyper and the compact path resume at different bytes", head
                );
            }
            Head::Other(prefix) => prop_assert_eq!(&prefix[..], bytes.as_bytes()),
            Head::Gone => prop_assert!(false, "bytes were sent"),
        }
    }
}

#[test]
fn two_lengths_of_one_request_go_to_hyper_which_refuses_them() {
    let bytes = format!(
        "GET /v1/poll HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 47\r\n\r\n{NEXT}"
    );
    assert!(matches!(direct_reads(bytes.as_bytes()), Head::Other(_)));
    assert!(hyper_reads(bytes.as_bytes()).requests.is_empty());
}
