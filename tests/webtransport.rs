//! WebTransport over HTTP/3 (`--webtransport-listen`), with the crate's own
//! client trusting the self-signed certificate by its hash, as a browser
//! does with `serverCertificateHashes`: events in order, resume after
//! kill -9, a gap on a wrong epoch, commands on a bidirectional stream,
//! typing as datagrams, refusals, the advert and settings that refuse to
//! start.

mod common;

use common::webtransport::{advert, client, start, trust_any_certificate, WAIT};
use common::{Server, API_KEY};
use std::time::Duration;

use serde_json::{json, Value};
use wtransport::endpoint::endpoint_side::Client;
use wtransport::error::ConnectionError;
use wtransport::{Connection, Endpoint, RecvStream, SendStream};

/// A session: the server's event stream read line by line, and a command
/// stream once one is opened.
struct Session {
    _endpoint: Endpoint<Client>,
    conn: Connection,
    events: RecvStream,
    read: Vec<u8>,
    commands: Option<(SendStream, RecvStream, Vec<u8>)>,
}

impl Session {
    async fn open(server: &Server, query: &str) -> Session {
        let (endpoint, conn, events) = common::webtransport::open(server, query).await;
        Session {
            _endpoint: endpoint,
            conn,
            events,
            read: Vec::new(),
            commands: None,
        }
    }

    /// The next line of the event stream, as JSON; `None` at its end.
    async fn next(&mut self) -> Option<Value> {
        next_line(&mut self.events, &mut self.read).await
    }

    /// Events (with a seq) until seq `last`, skipping `hb`.
    async fn events_until(&mut self, last: u64) -> Vec<Value> {
        let mut events = Vec::new();
        while events
            .last()
            .and_then(|e: &Value| e["seq"].as_u64())
            .is_none_or(|seq| seq < last)
        {
            let line = self.next().await.expect("stream open");
            if line["type"] != "hb" && line["type"] != "hello" {
                events.push(line);
            }
        }
        events
    }

    /// Sends a command on the session's command stream and reads the reply.
    async fn command(&mut self, command: Value) -> Value {
        if self.commands.is_none() {
            let (send, recv) = self.conn.open_bi().await.unwrap().await.unwrap();
            self.commands = Some((send, recv, Vec::new()));
        }
        let (send, recv, read) = self.commands.as_mut().unwrap();
        send.write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        next_line(recv, read).await.expect("a reply")
    }
}

async fn next_line(stream: &mut RecvStream, read: &mut Vec<u8>) -> Option<Value> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = read.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = read.drain(..=end).collect();
                return Some(serde_json::from_slice(&line[..end]).expect("a JSON line"));
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(Some(n)) => read.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    })
    .await
    .expect("a line in time")
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["seq"].as_u64()).collect()
}

#[tokio::test]
async fn a_session_gets_every_event_once_in_order_and_resumes_after_kill_9() {
    let mut server = start().await;
    let token = server.token("alice").await;
    for n in 1..=3 {
        server.publish(&["alice"], json!({ "n": n })).await;
    }
    let mut session = Session::open(&server, &format!("cursor=0&token={token}")).await;
    let hello = session.next().await.unwrap();
    assert_eq!(hello["type"], "hello", "{hello}");
    let epoch = hello["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());
    // What was waiting, then what comes while the session is open.
    assert_eq!(seqs(&session.events_until(3).await), vec![1, 2, 3]);
    for n in 4..=6 {
        server.publish(&["alice"], json!({ "n": n })).await;
    }
    let live = session.events_until(6).await;
    assert_eq!(seqs(&live), vec![4, 5, 6]);
    assert_eq!(live[2]["data"]["n"], 6);
    let reply = session
        .command(json!({"op": "ack", "seq": 6, "id": 1}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let inspected = server.get_json("/api/v1/users/alice", API_KEY).await;
    assert_eq!(inspected["queue"]["acked"], 6, "{inspected}");
    let connection = &inspected["connections"][0];
    assert_eq!(connection["transport"], "webtransport", "{inspected}");
    assert_eq!(connection["events_sent"], 6, "{inspected}");

    // Acknowledged by the API = durable: kill -9 right after.
    for n in 7..=8 {
        server.publish(&["alice"], json!({ "n": n })).await;
    }
    server.kill9();
    server.restart().await;
    trust_any_certificate(&mut server);
    let mut resumed =
        Session::open(&server, &format!("cursor=6&epoch={epoch}&token={token}")).await;
    let events = resumed.events_until(8).await;
    assert_eq!(seqs(&events), vec![7, 8], "nothing lost, nothing repeated");
    assert_eq!(events[0]["data"]["n"], 7);

    // A cursor of another history: a gap, then that history from the start.
    let mut elsewhere =
        Session::open(&server, &format!("cursor=6&epoch=elsewhere&token={token}")).await;
    let mut lines = Vec::new();
    while seqs(&lines).last() != Some(&8) {
        let line = elsewhere.next().await.unwrap();
        if line["type"] != "hb" && line["type"] != "hello" {
            lines.push(line);
        }
    }
    assert_eq!(lines[0]["type"], "gap", "{:?}", lines[0]);
    assert_eq!(lines[0]["data"]["epoch"], epoch.as_str());
    assert_eq!(seqs(&lines[1..]), (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn commands_go_up_a_bidirectional_stream_and_typing_comes_as_a_datagram() {
    let server = start().await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let mut a = Session::open(&server, &format!("token={alice}")).await;
    let mut b = Session::open(&server, &format!("token={bob}")).await;
    assert_eq!(
        server
            .metric("herald_connections{kind=\"webtransport\"}")
            .await,
        2.0
    );

    let reply = a
        .command(json!({"op": "send", "id": 7, "to": "bob", "body": "hi over h3", "cid": "c1"}))
        .await;
    assert_eq!(
        (
            reply["op"].clone(),
            reply["id"].clone(),
            reply["ok"].clone()
        ),
        (json!("reply"), json!(7), json!(true)),
        "{reply}"
    );
    let got = b.events_until(1).await;
    assert_eq!(got[0]["type"], "msg", "{got:?}");
    assert_eq!(got[0]["data"]["body"], "hi over h3");
    assert_eq!(got[0]["data"]["from"], "alice");

    let reply = a
        .command(json!({"op": "typing", "id": 8, "to": "bob"}))
        .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let datagram = tokio::time::timeout(WAIT, b.conn.receive_datagram())
        .await
        .expect("a datagram in time")
        .unwrap();
    let signal: Value = serde_json::from_slice(datagram.payload().as_ref()).unwrap();
    assert_eq!(
        signal,
        json!({"type": "typing", "from": "alice", "to": "bob"})
    );

    // Bad commands get the WebSocket's error replies and change nothing.
    let reply = a.command(json!({"op": "fly", "id": 9})).await;
    assert_eq!(
        (reply["ok"].clone(), reply["error"].clone()),
        (json!(false), json!("unknown_op"))
    );
    let reply = a.command(json!({"op": "ack", "seq": 99, "id": 10})).await;
    assert_eq!(reply["error"], "cursor_ahead", "{reply}");
    let (send, recv, read) = a.commands.as_mut().unwrap();
    send.write_all(b"not json\n").await.unwrap();
    let reply = next_line(recv, read).await.unwrap();
    assert_eq!(reply["error"], "bad_frame", "{reply}");
    // Nothing was queued for alice by any of it.
    assert!(server.poll(&alice, 0).await.is_empty());
}

/// How the server ended a session.
async fn closed_with(session: &mut Session) -> (u64, String) {
    match tokio::time::timeout(WAIT, session.conn.closed())
        .await
        .unwrap()
    {
        ConnectionError::ApplicationClosed(close) => (
            close.code().into_inner(),
            String::from_utf8_lossy(close.reason()).into_owned(),
        ),
        other => panic!("closed otherwise: {other}"),
    }
}

#[tokio::test]
async fn refused_sessions_say_why_and_change_nothing() {
    let server = start().await;
    let bad = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-0123456789abcdefgh"),
    )
    .unwrap();
    let mut refused = Session::open(&server, &format!("token={bad}")).await;
    let line = refused.next().await.unwrap();
    assert_eq!(
        (
            line["type"].clone(),
            line["status"].clone(),
            line["error"].clone()
        ),
        (json!("refused"), json!(401), json!("unauthorized")),
        "{line}"
    );
    assert_eq!(
        closed_with(&mut refused).await,
        (401, "unauthorized".into())
    );

    let token = server.token("alice").await;
    let mut ahead = Session::open(&server, &format!("cursor=5&token={token}")).await;
    let line = ahead.next().await.unwrap();
    assert_eq!(
        (
            line["status"].clone(),
            line["error"].clone(),
            line["head"].clone()
        ),
        (json!(409), json!("cursor_ahead"), json!(0)),
        "{line}"
    );
    assert_eq!(closed_with(&mut ahead).await.0, 409);

    // A page of another site may not open a session (a browser always
    // sends its Origin); the page served by herald itself may.
    let (url, hash) = advert(&server).await;
    let endpoint = client(hash);
    let from = |origin: &str| {
        wtransport::endpoint::ConnectOptions::builder(format!("{url}?token={token}"))
            .add_header("origin", origin)
            .build()
    };
    let foreign = endpoint
        .connect(from("https://evil.example"))
        .await
        .unwrap();
    let mut events = foreign.accept_uni().await.unwrap();
    let line = next_line(&mut events, &mut Vec::new()).await.unwrap();
    assert_eq!(
        (line["status"].clone(), line["error"].clone()),
        (json!(403), json!("forbidden")),
        "{line}"
    );
    let own = endpoint.connect(from(&server.base)).await.unwrap();
    let mut events = own.accept_uni().await.unwrap();
    let hello = next_line(&mut events, &mut Vec::new()).await.unwrap();
    assert_eq!(hello["type"], "hello", "{hello}");
    // The refused ones never counted as connected.
    assert_eq!(
        server
            .metric("herald_connections{kind=\"webtransport\"}")
            .await,
        1.0
    );
    let inspected = server.get_json("/api/v1/users/alice", API_KEY).await;
    assert_eq!(
        inspected["connections"].as_array().unwrap().len(),
        1,
        "{inspected}"
    );

    // Another path is not a session.
    let other = endpoint.connect(url.replace("/v1/wt", "/v1/ws")).await;
    assert!(other.is_err(), "a session on another path");
}

#[tokio::test]
async fn the_advert_names_the_session_url_and_settings_that_cannot_work_refuse_to_start() {
    let server = start().await;
    let (url, hash) = advert(&server).await;
    let printed = server.output.lock().unwrap().clone();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        printed.contains(&format!("self-signed certificate sha-256 {hex}")),
        "{printed}"
    );
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with("/v1/wt"),
        "{url}"
    );
    assert!(
        printed.contains(&format!("webtransport on {url}")),
        "{printed}"
    );

    // Without --webtransport-listen there is none to advertise.
    let mut plain = Server::start_with(&["--tls-self-signed"]).await;
    trust_any_certificate(&mut plain);
    let response = plain
        .http
        .get(plain.url("/v1/webtransport"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let refused = Server::try_start_raw(&["--webtransport-listen", "127.0.0.1:0"]).await;
    let output = refused.err().expect("refused to start");
    assert!(
        output.contains("--webtransport-listen needs a certificate"),
        "{output}"
    );
}

#[tokio::test]
async fn the_per_user_cap_holds_and_a_shutdown_closes_sessions_to_reconnect() {
    let mut server = common::webtransport::start_with(&["--max-user-connections", "1"]).await;
    let token = server.token("alice").await;
    let mut first = Session::open(&server, &format!("token={token}")).await;
    assert_eq!(first.next().await.unwrap()["type"], "hello");
    // The cap counts sessions as it counts every stream: no held long-poll
    // to make room, so 429 with when to retry.
    let mut second = Session::open(&server, &format!("token={token}")).await;
    let line = second.next().await.unwrap();
    assert_eq!(
        (line["status"].clone(), line["error"].clone()),
        (json!(429), json!("too_many_requests")),
        "{line}"
    );
    assert!(
        line["retry_after"].as_u64().is_some_and(|s| s >= 1),
        "{line}"
    );
    drop(second);

    // SIGTERM: the event stream ends and the session closes with 503
    // (reconnect); the process exits cleanly.
    server.sigterm();
    while first.next().await.is_some() {}
    assert_eq!(closed_with(&mut first).await.0, 503);
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
}
