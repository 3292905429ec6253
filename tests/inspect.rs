//! The user inspector and the delivery trace over the real server: what
//! an operator sees of a user and of one event, as it happens.

mod common;

use std::time::Duration;

use common::clients::sse_events;
use common::{eventually, Server, API_KEY};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn inspect(server: &Server, uid: &str) -> Value {
    server
        .get_json(&format!("/api/v1/users/{uid}"), API_KEY)
        .await
}

async fn trace(server: &Server, uid: &str, seq: u64) -> Value {
    server
        .get_json(&format!("/api/v1/users/{uid}/events/{seq}"), API_KEY)
        .await
}

fn steps(trace: &Value) -> Vec<String> {
    trace["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| match s["transport"].as_str() {
            Some(transport) => format!("{}:{transport}", s["step"].as_str().unwrap()),
            None => s["step"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Waits (10 s at most) until the trace of `uid`'s `seq` satisfies
/// `done`, and returns it.
async fn trace_until(server: &Server, uid: &str, seq: u64, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = trace(server, uid, seq).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the trace of {uid}/{seq} never got there: {last:#}");
}

#[tokio::test]
async fn a_message_to_a_user_with_sse_and_a_websocket_open_shows_both_writes_the_ack_and_the_read()
{
    let server = Server::start().await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let sse = server.open("/v1/sse?cursor=0", &bob).await;
    assert_eq!(sse.status(), 200);
    let mut sse = sse.bytes_stream();
    let mut ws = server.ws(&format!("cursor=0&token={bob}")).await;
    let both_open = eventually(Duration::from_secs(5), || async {
        inspect(&server, "bob").await["connections"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    })
    .await;
    assert!(both_open, "the inspector shows both connections");

    let sent = server
        .http
        .post(server.url("/v1/messages"))
        .bearer_auth(&alice)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"to": "bob", "body": "where is it?", "cid": "c-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let id = sent.json::<Value>().await.unwrap()["id"].as_u64().unwrap();

    // Both transports get it; its seq is what they say.
    let mut buf = String::new();
    let from_sse = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(e) = sse_events(&mut buf)
                .into_iter()
                .find(|e| e["type"] == "msg")
            {
                return e;
            }
            let chunk = sse.next().await.unwrap().unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the message on SSE");
    let seq = from_sse["seq"].as_u64().unwrap();
    let from_ws = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame["type"] == "msg" {
                return frame;
            }
        }
        panic!("the socket closed");
    })
    .await
    .expect("the message on the WebSocket");
    assert_eq!(from_ws["seq"], seq);

    ws.send(Message::text(json!({"op": "ack", "seq": seq}).to_string()))
        .await
        .unwrap();
    let acked = trace_until(&server, "bob", seq, |t| steps(t).contains(&"acked".into())).await;
    assert_eq!(acked["status"], "kept");
    assert_eq!(acked["acked"], true);
    assert_eq!(acked["event"]["data"]["id"], id);
    let mut seen = steps(&acked);
    seen[2..4].sort();
    assert_eq!(
        seen,
        ["appended", "durable", "written:sse", "written:ws", "acked"],
        "{acked:#}"
    );
    let appended = &acked["steps"][0];
    assert_eq!(appended["kind"], "msg");
    assert_eq!(appended["cause"]["what"], "POST /v1/messages");
    assert_eq!(appended["cause"]["trace_id"], TRACE_ID);
    assert_eq!(appended["cause"]["key"], "c-42");
    let ack = &acked["steps"][4];
    assert_eq!(ack["cause"]["what"], "ws ack");
    assert_eq!(ack["cursor"], seq);
    let times: Vec<u64> = acked["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["at"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {times:?}"
    );

    // The writes name the connections the inspector shows.
    let user = inspect(&server, "bob").await;
    let mut connections: Vec<(String, u64)> = user["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["transport"].as_str().unwrap().to_owned(),
                c["id"].as_u64().unwrap(),
            )
        })
        .collect();
    connections.sort();
    let mut written: Vec<(String, u64)> = acked["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "written")
        .map(|s| {
            (
                s["transport"].as_str().unwrap().to_owned(),
                s["connection"].as_u64().unwrap(),
            )
        })
        .collect();
    written.sort();
    assert_eq!(connections, written);
    for c in user["connections"].as_array().unwrap() {
        assert_eq!(c["cursor"], seq, "{c}");
        assert!(c["events_sent"].as_u64().unwrap() >= 1, "{c}");
        assert!(
            c["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{c}"
        );
        assert!(c["opened_at"].as_u64().unwrap() <= c["last_write_at"].as_u64().unwrap());
    }
    assert_eq!(user["queue"]["head"], seq);
    assert_eq!(user["queue"]["acked"], seq);
    assert_eq!(user["queue"]["waiting"], 0);
    assert_eq!(user["queue"]["oldest"], 1);
    assert_eq!(user["presence"]["visible"], "online");
    assert_eq!(
        user["presence"]["leases"],
        json!([user["node"]]),
        "this node holds bob's lease"
    );
    assert_eq!(
        user["send_budget"],
        json!({"left": 40, "per_second": 20, "burst": 40}),
        "bob sent nothing"
    );

    // Bob reads it: the trace says so.
    let (status, _) = server
        .post_as(&bob, &format!("/v1/messages/{id}/read"), json!({}))
        .await;
    assert_eq!(status, 200);
    let read = trace_until(&server, "bob", seq, |t| steps(t).contains(&"read".into())).await;
    assert_eq!(steps(&read).last().unwrap(), "read");
    let budget = &inspect(&server, "alice").await["send_budget"];
    assert_eq!(budget["burst"], 40, "{budget}");
    assert!(
        budget["left"].as_u64().is_some_and(|left| left <= 40),
        "{budget}"
    );
}

#[tokio::test]
async fn an_offline_user_s_event_is_appended_and_durable_then_written_once_it_long_polls() {
    let server = Server::start().await;
    let carol = server.token("carol").await;
    server
        .backend_post(
            "/api/v1/publish",
            json!({"to": ["carol"], "data": "for later"}),
        )
        .await;
    let offline = trace(&server, "carol", 1).await;
    assert_eq!(steps(&offline), ["appended", "durable"], "{offline:#}");
    assert_eq!(offline["acked"], false);
    assert_eq!(offline["steps"][0]["cause"]["what"], "POST /api/v1/publish");
    assert!(offline["steps"][0]["cause"].get("trace_id").is_none());
    let user = inspect(&server, "carol").await;
    assert_eq!(user["connections"], json!([]));
    assert_eq!(user["queue"]["waiting"], 1);
    assert_eq!(user["presence"]["visible"], "offline");
    assert_eq!(user["presence"]["leases"], json!([]));

    let (status, page) = server.get("/v1/longpoll?cursor=0&timeout=5", &carol).await;
    assert_eq!(status, 200);
    assert_eq!(page["events"][0]["seq"], 1);
    let polled = trace(&server, "carol", 1).await;
    assert_eq!(steps(&polled), ["appended", "durable", "written:longpoll"]);
    // The next long-poll's cursor acks it.
    let (status, _) = server.get("/v1/longpoll?cursor=1&timeout=1", &carol).await;
    assert_eq!(status, 200);
    let acked = trace(&server, "carol", 1).await;
    assert_eq!(steps(&acked).last().unwrap(), "acked");
    assert_eq!(acked["steps"][3]["cause"]["what"], "GET /v1/longpoll");
    assert_eq!(acked["acked"], true);
}

#[tokio::test]
async fn an_expired_event_says_so_and_bad_requests_are_refused_clearly() {
    let server = Server::start_with(&["--queue-cap", "2", "--trim-interval-ms", "50"]).await;
    for n in 0..5 {
        server.publish(&["dave"], json!(n)).await;
    }
    let expired = trace_until(&server, "dave", 1, |t| t["status"] == "expired").await;
    assert_eq!(expired["event"], Value::Null);
    // Still in the trace window: what happened before it expired.
    assert_eq!(steps(&expired), ["appended", "durable"]);
    assert_eq!(trace(&server, "dave", 5).await["status"], "kept");
    let oldest = inspect(&server, "dave").await["queue"]["oldest"]
        .as_u64()
        .unwrap();
    assert!(oldest > 1, "{oldest}");

    for (path, bearer, status) in [
        ("/api/v1/users/dave/events/6", API_KEY, 404),
        ("/api/v1/users/dave/events/0", API_KEY, 404),
        ("/api/v1/users/nobody/events/1", API_KEY, 404),
        ("/api/v1/users/dave/events/x", API_KEY, 400),
        ("/api/v1/users/da%20ve", API_KEY, 400),
        ("/api/v1/users/dave", "wrong-api-key-0123456789", 401),
        (
            "/api/v1/users/dave/events/5",
            "wrong-api-key-0123456789",
            401,
        ),
    ] {
        let response = server.call("GET", path, Some(bearer), None).await;
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let response = server
        .call("POST", "/api/v1/users/dave", Some(API_KEY), None)
        .await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn with_the_trace_off_nothing_is_traced_and_the_inspector_still_answers() {
    let server = Server::start_with(&["--trace-minutes", "0"]).await;
    server.publish(&["erin"], json!("untraced")).await;
    let untraced = trace(&server, "erin", 1).await;
    assert_eq!(untraced["status"], "kept");
    assert_eq!(untraced["steps"], json!([]));
    assert_eq!(inspect(&server, "erin").await["queue"]["head"], 1);
}

#[tokio::test]
async fn json_logs_follow_one_event_by_its_trace_id_from_the_publish_to_the_stream() {
    let server = Server::start_with(&[
        "--log-format",
        "json",
        "--log",
        "warn,herald::delivery=debug",
    ])
    .await;
    let bob = server.token("bob").await;
    let mut sse = server.open("/v1/sse?cursor=0", &bob).await.bytes_stream();
    let published = server
        .http
        .post(server.url("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"to": ["bob"], "data": "followed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let seq = published.json::<Value>().await.unwrap()["seqs"]["bob"]
        .as_u64()
        .unwrap();
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !sse_events(&mut buf).iter().any(|e| e["seq"] == seq) {
            let chunk = sse.next().await.unwrap().unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the event on the stream");
    let traced = |message: &'static str| {
        let output = server.output.clone();
        move || {
            let output = output.lock().unwrap().clone();
            output
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| {
                    line["fields"]["message"] == message && line["fields"]["trace_id"] == TRACE_ID
                })
        }
    };
    let mut lines = Vec::new();
    for message in ["durable", "written"] {
        let find = traced(message);
        let found = eventually(Duration::from_secs(5), || {
            let found = find().is_some();
            async move { found }
        })
        .await;
        assert!(found, "a {message} line with the trace id");
        lines.push(find().unwrap());
    }
    for line in &lines {
        assert_eq!(line["target"], "herald::delivery", "{line}");
        assert_eq!(line["fields"]["uid"], "bob", "{line}");
        assert_eq!(line["fields"]["seq"], seq, "{line}");
        assert!(line["fields"]["node"]
            .as_str()
            .is_some_and(|n| !n.is_empty()));
    }
    assert_eq!(lines[1]["fields"]["transport"], "sse");
}

#[tokio::test]
async fn an_invalid_log_filter_or_format_refuses_to_start() {
    for flags in [["--log", "herald=loudest"], ["--log-format", "yaml"]] {
        let mut args = vec!["--secret", common::SECRET, "--api-key", API_KEY];
        args.extend(flags);
        let Err(output) = Server::try_start_raw(&args).await else {
            panic!("{flags:?} started");
        };
        assert!(output.contains(flags[0]), "{flags:?}: {output}");
    }
}
