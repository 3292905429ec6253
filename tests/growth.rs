//! What a long run leaves behind: every record has a retention rule, every
//! in-memory map only holds what is in use, and memory always equals what
//! is durable. The store is inspected on disk after the server stopped.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, Server, API_KEY};
use serde_json::{json, Value};

/// Opens the stopped server's sled database as herald lays it out.
fn open_store(data: &Path) -> sled::Db {
    sled::Config::new()
        .path(data)
        .segment_size(4 << 20)
        .open()
        .expect("open the data dir")
}

fn count(db: &sled::Db, tree: &str, prefix: &str) -> usize {
    db.open_tree(tree).unwrap().scan_prefix(prefix).count()
}

async fn stop(server: &mut Server) {
    server.sigterm();
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
}

async fn put(server: &Server, path: &str, body: Value) {
    assert_eq!(server.backend_put(path, body).await, 200, "PUT {path}");
}

async fn post(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let (status, answer) = server.post_as(token, path, body).await;
    assert_eq!(status, 200, "POST {path}: {answer}");
    answer
}

#[tokio::test]
async fn records_expire_and_memory_returns_to_what_is_in_use() {
    let mut server = Server::start_with(&[
        "--queue-max-age",
        "2",
        "--history-retention",
        "2",
        "--retention",
        "1",
        "--trim-interval-ms",
        "200",
        "--send-rate",
        "0",
    ])
    .await;
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    put(
        &server,
        "/api/v1/groups/g/members",
        json!({"members": ["alice", "bob"]}),
    )
    .await;
    let mut last_msgid = 0;
    let mut dm_ids = Vec::new();
    for round in 0..3 {
        for i in 0..10 {
            let cid = format!("dm-{round}-{i}");
            let msg = json!({"to": "bob", "body": i, "cid": cid});
            let first = post(&server, &alice, "/v1/messages", msg.clone()).await;
            let retry = post(&server, &alice, "/v1/messages", msg).await;
            assert_eq!(first["id"], retry["id"]);
            dm_ids.push(first["id"].as_u64().unwrap());
        }
        for i in 0..5 {
            let msg = json!({"body": i, "cid": format!("g-{round}-{i}")});
            last_msgid = post(&server, &alice, "/v1/groups/g/messages", msg.clone()).await["msgid"]
                .as_u64()
                .unwrap();
            post(&server, &alice, "/v1/groups/g/messages", msg).await;
        }
        post(
            &server,
            &bob,
            "/v1/groups/g/read",
            json!({"msgid": last_msgid}),
        )
        .await;
        let events = server.poll_all(&bob).await;
        let cursor = events.last().unwrap()["seq"].as_u64().unwrap();
        server.poll(&bob, cursor).await;
    }
    let last_write = std::time::Instant::now();
    // Per DM and per retry: a message record and an idempotency key; per
    // group post: the message, its cid record and the idempotency key of
    // its references. Each has a deadline.
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.metric("herald_expired_records_total").await >= 150.0
        })
        .await,
        "expired: {}",
        server.metric("herald_expired_records_total").await
    );
    // Retention works through the deadlines in batches: each test waits
    // for the very records it asserts on. The conversation's history
    // expires...
    assert!(
        eventually(Duration::from_secs(15), || async {
            let history = server
                .get_json("/v1/conversations/alice/messages", &bob)
                .await;
            history["messages"] == json!([])
        })
        .await,
        "{}",
        server
            .get_json("/v1/conversations/alice/messages", &bob)
            .await
    );
    // ... and so does the message record: its read receipt can no longer
    // be asked.
    let read = format!("/v1/messages/{}/read", dm_ids[0]);
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.post_as(&bob, &read, Value::Null).await.0 == 404
        })
        .await
    );
    // msgids keep rising when the whole history expired.
    let next = post(
        &server,
        &alice,
        "/v1/groups/g/messages",
        json!({"body": "new"}),
    )
    .await;
    assert_eq!(next["msgid"], last_msgid + 1);
    // Caches drop what nobody uses.
    for kind in [
        "group_read_cursors",
        "receipt_windows",
        "group_locks",
        "counters",
    ] {
        let name = format!("herald_memory_entries{{kind=\"{kind}\"}}");
        assert!(
            eventually(Duration::from_secs(10), || async {
                server.metric(&name).await == 0.0
            })
            .await,
            "{kind}: {}",
            server.metric(&name).await
        );
    }
    // Every record was written by `last_write` with a deadline 2 s on:
    // once that passed, the passes (every 200 ms) remove the last of them,
    // and the count of expired records stops moving.
    assert!(
        eventually(Duration::from_secs(15), || async {
            let before = server.metric("herald_expired_records_total").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = server.metric("herald_expired_records_total").await;
            last_write.elapsed() > Duration::from_millis(2600) && before == after
        })
        .await
    );
    stop(&mut server).await;

    let db = open_store(&server.data);
    for prefix in ["msg/", "conv/", "gcid/", "gpend/"] {
        assert_eq!(count(&db, "kv", prefix), 0, "{prefix}");
    }
    assert_eq!(
        count(&db, "kv", "glog/"),
        1,
        "only the newest message is young"
    );
    // Only the newest post's is young: the idempotency key of its
    // references.
    assert_eq!(count(&db, "once", ""), 1, "idempotency keys");
    assert_eq!(count(&db, "once", "gref\0g\0"), 1, "the newest post's");
    assert_eq!(count(&db, "kv", "gread/"), 1, "bob's read cursor stays");
}

#[tokio::test]
async fn a_retried_cid_leaves_no_orphan_record() {
    let mut server = Server::start_with(&["--send-rate", "0"]).await;
    let alice = server.token("alice").await;
    for i in 0..10 {
        let msg = json!({"to": "bob", "body": i, "cid": format!("c{i}")});
        for _ in 0..4 {
            post(&server, &alice, "/v1/messages", msg.clone()).await;
        }
    }
    stop(&mut server).await;
    let db = open_store(&server.data);
    assert_eq!(count(&db, "kv", "msg/"), 10, "one record per message sent");
}

#[tokio::test]
async fn a_group_post_a_crash_interrupted_is_finished_at_start() {
    let mut server = Server::start().await;
    put(
        &server,
        "/api/v1/groups/g/members",
        json!({"members": ["alice", "bob"]}),
    )
    .await;
    let alice = server.token("alice").await;
    post(
        &server,
        &alice,
        "/v1/groups/g/messages",
        json!({"body": "one"}),
    )
    .await;
    stop(&mut server).await;
    {
        // What a crash between the post's batch and its references leaves.
        let db = open_store(&server.data);
        let kv = db.open_tree("kv").unwrap();
        let message =
            json!({"gid": "g", "msgid": 2, "from": "alice", "body": "two", "cid": null, "ts": 1});
        kv.insert(
            "glog/g/00000000000000000002",
            message.to_string().as_bytes(),
        )
        .unwrap();
        kv.insert("gnext/g", "2").unwrap();
        kv.insert("gpend/g/00000000000000000002", "").unwrap();
        db.flush().unwrap();
    }
    server.restart().await;
    let bob = server.token("bob").await;
    let bodies: Vec<Value> = server
        .poll_all(&bob)
        .await
        .iter()
        .filter(|e| e["type"] == "group_msg")
        .map(|e| e["data"]["body"].clone())
        .collect();
    assert_eq!(bodies, vec![json!("one"), json!("two")]);
    stop(&mut server).await;
    assert_eq!(count(&open_store(&server.data), "kv", "gpend/"), 0);
}

/// The friend list of alice and the members of group g as memory has them
/// (through the presence pulls, which read memory).
async fn social_memory(server: &Server, alice: &str) -> (Vec<String>, Vec<String>) {
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let (_, friends) = server.get("/v1/friends/presence", alice).await;
    let (_, members) = server.get("/v1/groups/g/presence", alice).await;
    (keys(&friends["friends"]), keys(&members["members"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_social_graph_writes_leave_memory_equal_to_the_store() {
    let mut server = Server::start().await;
    for round in 0..12 {
        let writes: Vec<_> = (0..6)
            .map(|k| {
                let friends = json!({"friends": [format!("f{round}-{k}"), "zed"]});
                let members = json!({"members": ["alice", format!("m{round}-{k}")]});
                let (http, base) = (server.http.clone(), server.base.clone());
                tokio::spawn(async move {
                    for (path, body) in [
                        ("/api/v1/users/alice/friends", friends),
                        ("/api/v1/groups/g/members", members),
                    ] {
                        let response = http
                            .put(format!("{base}{path}"))
                            .bearer_auth(API_KEY)
                            .json(&body)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 200);
                    }
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap();
        }
        let alice = server.token("alice").await;
        let in_memory = social_memory(&server, &alice).await;
        server.restart().await;
        let alice = server.token("alice").await;
        let stored = social_memory(&server, &alice).await;
        assert_eq!(
            in_memory, stored,
            "round {round}: memory differs from the store"
        );
    }
}

#[tokio::test]
async fn records_a_0_5_store_kept_without_deadline_get_one_at_start() {
    let mut server =
        Server::start_with(&["--queue-max-age", "1", "--trim-interval-ms", "100"]).await;
    stop(&mut server).await;
    {
        // What herald 0.5 left: records with no deadline, and no marker.
        let db = open_store(&server.data);
        let kv = db.open_tree("kv").unwrap();
        kv.insert("msg/7", r#"{"from":"alice","to":"bob"}"#)
            .unwrap();
        kv.insert("gcid/g/alice\0c1", r#"{"msgid":1,"refs":true}"#)
            .unwrap();
        kv.remove("herald/records-have-deadlines").unwrap();
        db.open_tree("once")
            .unwrap()
            .insert("msg\0alice\0c1", &7u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    server.restart().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.metric("herald_expired_records_total").await >= 3.0
        })
        .await
    );
    stop(&mut server).await;
    let db = open_store(&server.data);
    assert_eq!(count(&db, "kv", "msg/") + count(&db, "kv", "gcid/"), 0);
    assert_eq!(count(&db, "once", ""), 0);
}
