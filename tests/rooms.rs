//! Rooms, presence, acknowledgements, the history API, durable history and resume.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn join(c: &mut Client, room: &str) -> Value {
    c.send_json(json!({"type": "join", "room": room}));
    let p = c.recv_type("presence");
    assert_eq!(p["room"], room);
    p
}

fn say_in(c: &mut Client, room: &str, text: &str, r#ref: u64) {
    c.send_json(json!({"type": "message", "room": room, "text": text, "ref": r#ref}));
}

fn post(server: &TestServer, room: &str, body: Value) -> HttpResponse {
    let body = body.to_string();
    let len = format!("Content-Length: {}", body.len());
    let mut stream = tcp(server.http);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{len}\r\n\r\n{body}"
    )
    .unwrap();
    let mut raw = vec![];
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn history(server: &TestServer, room: &str, query: &str) -> Vec<Value> {
    let r = http_get(server.http, &format!("/api/rooms/{room}/messages{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["messages"].as_array().cloned().unwrap()
}

#[test]
fn messages_reach_only_the_rooms_members_with_a_seq_per_room() {
    let server = TestServer::start();
    let mut a = server.chat();
    let mut b = server.chat();
    a.recv_type("join");
    let p = join(&mut a, "dev");
    assert_eq!(p["members"], json!([{"id": a.id, "user": a.user, "name": a.name}]));
    assert_eq!(p["seq"], 0);
    let p = join(&mut b, "dev");
    assert_eq!((p["members"].as_array().unwrap().len(), p["count"].as_u64()), (2, Some(2)));
    assert_eq!(p["members"][0]["id"], b.id, "the newcomer is listed first");
    let j = a.recv_type("join");
    assert_eq!((j["room"].as_str(), j["id"].as_u64()), (Some("dev"), Some(b.id)));

    say_in(&mut a, "dev", "dev 1", 1);
    say_in(&mut a, "lobby", "lobby 1", 2);
    say_in(&mut a, "dev", "dev 2", 3);
    let mut got = vec![];
    while got.len() < 3 {
        let m = b.recv_type("message");
        got.push((m["room"].as_str().unwrap().to_string(), m["seq"].as_u64().unwrap(), m["text"].clone()));
    }
    assert_eq!(
        got,
        vec![
            ("dev".into(), 1, json!("dev 1")),
            ("lobby".into(), 1, json!("lobby 1")),
            ("dev".into(), 2, json!("dev 2"))
        ]
    );

    // b leaves dev: it is told, a is told, and dev's messages stop reaching b.
    b.send_json(json!({"type": "leave", "room": "dev"}));
    let l = b.recv_type("leave");
    assert_eq!((l["room"].as_str(), l["id"].as_u64()), (Some("dev"), Some(b.id)));
    assert_eq!(a.recv_type("leave")["id"], b.id);
    say_in(&mut a, "dev", "b is gone", 4);
    say_in(&mut a, "lobby", "b sees this", 5);
    let m = b.recv_type("message");
    assert_eq!(m["text"], "b sees this");

    // Errors: not a member, already a member, bad room names.
    say_in(&mut b, "dev", "not allowed", 9);
    let e = b.recv_type("error");
    assert!(e["error"].as_str().unwrap().contains("not in room"), "{e}");
    assert_eq!(e["ref"], 9);
    b.send_json(json!({"type": "join", "room": "lobby"}));
    assert!(b.recv_type("error")["error"].as_str().unwrap().contains("already in room"));
    b.send_json(json!({"type": "join", "room": "Bad Room"}));
    assert!(b.recv_type("error")["error"].as_str().unwrap().contains("a-z"));
}

#[test]
fn acks_come_after_the_message_is_stored() {
    let server = TestServer::start();
    let mut c = server.chat();
    for r in 1..=20 {
        say_in(&mut c, "lobby", &format!("m{r}"), r);
    }
    let mut acked = vec![];
    while acked.len() < 20 {
        let v = c.recv();
        if v["type"] == "ack" {
            assert_eq!(v["room"], "lobby");
            acked.push((v["ref"].as_u64().unwrap(), v["seq"].as_u64().unwrap()));
        }
    }
    assert_eq!(acked, (1..=20).map(|r| (r, r)).collect::<Vec<_>>());
    // Every acknowledged message is in the history already.
    let stored = history(&server, "lobby", "?after=0&limit=100");
    assert_eq!(stored.len(), 20);
    assert_eq!(stored[19]["text"], "m20");
}

#[test]
fn two_tabs_of_one_user_show_once() {
    let server = TestServer::start();
    let mut watcher = server.chat();
    let mut tab1 = server.chat();
    let mut tab2 = tab1.again(&server.chat_url());
    for tab in [&mut tab1, &mut tab2] {
        tab.send_json(json!({"type": "name", "name": "ada"}));
        tab.recv_type("name");
    }
    join(&mut watcher, "pair");
    join(&mut tab1, "pair");
    assert_eq!(next_in(&mut watcher, "pair")["type"], "join");
    let p = join(&mut tab2, "pair");
    let users: Vec<&str> = p["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(users.iter().filter(|u| **u == tab1.user).count(), 1, "{p}");
    // No second join for "ada": the watcher's next event in "pair" is tab2's message.
    say_in(&mut tab2, "pair", "second tab here", 1);
    assert_eq!(next_in(&mut watcher, "pair")["text"], "second tab here");
    // tab1 leaves: ada is still present (tab2), so no leave; tab2 leaves: now it is.
    tab1.send_json(json!({"type": "leave", "room": "pair"}));
    tab1.recv_type("leave");
    say_in(&mut tab2, "pair", "still here", 2);
    assert_eq!(next_in(&mut watcher, "pair")["text"], "still here");
    tab2.send_json(json!({"type": "leave", "room": "pair"}));
    let l = next_in(&mut watcher, "pair");
    assert_eq!((l["type"].as_str(), l["id"].as_u64()), (Some("leave"), Some(tab2.id)));
}

/// The next event that concerns `room`.
fn next_in(c: &mut Client, room: &str) -> Value {
    loop {
        let v = c.recv();
        if v["room"] == room {
            return v;
        }
    }
}

#[test]
fn history_api_lists_rooms_reads_pages_and_accepts_posts() {
    let server = TestServer::start();
    let mut c = server.chat();
    join(&mut c, "ops");
    let r = post(&server, "ops", json!({"text": "deploy done", "name": "ci"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((v["room"].as_str(), v["seq"].as_u64(), v["name"].as_str()), (Some("ops"), Some(1), Some("ci")));
    let m = c.recv_type("message");
    assert_eq!(
        (m["text"].as_str(), m["name"].as_str(), m["room"].as_str()),
        (Some("deploy done"), Some("ci"), Some("ops"))
    );
    for i in 2..=5 {
        assert_eq!(post(&server, "ops", json!({"text": format!("n{i}")})).status, 201);
    }
    let page = history(&server, "ops", "?after=2&limit=2");
    assert_eq!(page.iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(history(&server, "ops", "").len(), 5);

    let rooms: Value = serde_json::from_slice(&http_get(server.http, "/api/rooms").body).unwrap();
    let ops = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "ops").unwrap();
    assert_eq!((ops["members"].as_u64(), ops["last_seq"].as_u64()), (Some(1), Some(5)));

    assert_eq!(post(&server, "Bad!", json!({"text": "x"})).status, 400);
    assert_eq!(post(&server, "ops", json!({"text": ""})).status, 400);
    assert_eq!(post(&server, "ops", json!({"nope": 1})).status, 400);
    assert_eq!(post(&server, "ops", json!({"text": "x", "name": "a\nb"})).status, 400);
    assert_eq!(http_get(server.http, "/api/rooms/ops/messages?after=x").status, 400);
}

/// Collects `message` events of `room` until `want` of them arrived; returns their seqs.
fn collect_seqs(c: &mut Client, room: &str, want: usize) -> Vec<u64> {
    let mut seqs = vec![];
    while seqs.len() < want {
        let v = c.recv();
        if v["type"] == "message" && v["room"] == room {
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    seqs
}

#[test]
fn resume_replays_exactly_what_was_missed() {
    let server = TestServer::start();
    let mut sender = server.chat();
    for i in 1..=5 {
        say_in(&mut sender, "lobby", &format!("early {i}"), i);
    }
    let mut r = server.chat();
    r.send_json(json!({"type": "leave", "room": "lobby"}));
    r.recv_type("leave");
    for i in 6..=10 {
        say_in(&mut sender, "lobby", &format!("missed {i}"), i);
    }
    collect_seqs(&mut sender, "lobby", 10);
    r.send_json(json!({"type": "resume", "room": "lobby", "after": 3}));
    assert_eq!(collect_seqs(&mut r, "lobby", 7), (4..=10).collect::<Vec<_>>());
    let p = r.recv_type("presence");
    assert_eq!((p["room"].as_str(), p["seq"].as_u64()), (Some("lobby"), Some(10)));
    say_in(&mut sender, "lobby", "live", 11);
    assert_eq!(collect_seqs(&mut r, "lobby", 1), vec![11]);

    // The same through the URL, on a new connection.
    let url = format!("{}?resume=lobby:8", server.chat_url());
    let mut ws = connect_raw(&url).unwrap();
    assert_eq!(read_json(&mut ws)["type"], "welcome");
    let mut seqs = vec![];
    while seqs.len() < 3 {
        let v = read_json(&mut ws);
        if v["type"] == "message" {
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, vec![9, 10, 11]);
}

#[test]
fn resume_while_messages_keep_arriving_loses_and_duplicates_nothing() {
    const TOTAL: u64 = 2000;
    let server = TestServer::start();
    let url = server.chat_url();
    let flood = std::thread::spawn(move || {
        let mut s = Client::connect(&url);
        for i in 1..=TOTAL {
            say_in(&mut s, "lobby", &format!("f{i}"), i);
            if i % 50 == 0 {
                // Keep our own backlog small while flooding.
                while s.recv()["ref"] != i {}
            }
        }
    });
    // Resume repeatedly from wherever we are, on fresh connections, while the flood runs.
    let mut seen: Vec<u64> = vec![];
    let mut after = 0;
    while after < TOTAL {
        let mut ws = connect_raw(&format!("{}?resume=lobby:{after}", server.chat_url())).unwrap();
        let mut got = 0;
        while got < 40 && after < TOTAL {
            let v = read_json(&mut ws);
            if v["type"] == "message" {
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(seq, after + 1, "no gap, no duplicate (after {after})");
                seen.push(seq);
                after = seq;
                got += 1;
            }
        }
    }
    flood.join().unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>());
}

#[test]
fn a_gap_is_reported_when_retention_dropped_messages() {
    let server = TestServer::with(|c| c.history_limit = 5);
    let mut c = server.chat();
    for i in 1..=30 {
        say_in(&mut c, "lobby", &format!("m{i}"), i);
    }
    collect_seqs(&mut c, "lobby", 30);
    wait_until("pruned to 5", || history(&server, "lobby", "?limit=100").len() == 5);
    c.send_json(json!({"type": "leave", "room": "lobby"}));
    c.recv_type("leave");
    c.send_json(json!({"type": "resume", "room": "lobby", "after": 10}));
    let gap = c.recv_type("gap");
    assert_eq!(gap, json!({"type": "gap", "room": "lobby", "from": 11, "to": 25}));
    assert_eq!(collect_seqs(&mut c, "lobby", 5), (26..=30).collect::<Vec<_>>());
}

#[test]
fn history_survives_a_restart_and_numbering_continues() {
    let data = TempDir::new();
    {
        let server = TestServer::in_dir(&data.0, |c| c.database = test_database_for(&data));
        let mut c = server.chat();
        for i in 1..=3 {
            say_in(&mut c, "lobby", &format!("before {i}"), i);
        }
        collect_seqs(&mut c, "lobby", 3);
    }
    let server = TestServer::in_dir(&data.0, |c| c.database = test_database_for(&data));
    assert_eq!(history(&server, "lobby", "").len(), 3);
    let mut c = server.chat();
    say_in(&mut c, "lobby", "after", 1);
    assert_eq!(collect_seqs(&mut c, "lobby", 1), vec![4]);
}

/// For restart tests under Postgres: one database per data dir, reused across restarts.
fn test_database_for(data: &TempDir) -> Option<String> {
    let marker = data.0.join("pg-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return Some(url);
    }
    let url = test_database()?;
    std::fs::write(&marker, &url).unwrap();
    Some(url)
}

#[test]
fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    let data = TempDir::new();
    let dir = data.0.to_str().unwrap().to_string();
    let db = test_database_for(&data);
    let mut args = vec!["--data-dir", &dir];
    if let Some(url) = &db {
        args.extend(["--database", url]);
    }
    let mut server = BinaryServer::start(&args);
    let mut c = Client::connect(&server.chat_url());
    let mut acked = BTreeSet::new();
    for i in 1..=2000u64 {
        c.send_json(json!({"type": "message", "text": format!("burst {i}"), "ref": i}));
        if i == 1000 {
            // Mid-burst: collect some acks, then kill the server without warning.
            while acked.len() < 200 {
                let v = c.recv();
                if v["type"] == "ack" {
                    acked.insert(v["seq"].as_u64().unwrap());
                }
            }
            server.signal(libc::SIGKILL);
            break;
        }
    }
    // Whatever acks were already on the wire count too.
    let _ = c.ws.get_ref().set_read_timeout(Some(Duration::from_millis(500)));
    while let Ok(msg) = c.ws.read() {
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "ack" {
                acked.insert(v["seq"].as_u64().unwrap());
            }
        }
    }
    server.wait_exit(Duration::from_secs(5));
    let restarted = BinaryServer::start(&args);
    let r = http_get(restarted.http, "/api/rooms/lobby/messages?after=0&limit=1000");
    let stored: Value = serde_json::from_slice(&r.body).unwrap();
    let stored: BTreeSet<u64> =
        stored["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(acked.len() >= 200);
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost after kill -9: {missing:?}");
    // And the stored log has no holes.
    let max = *stored.iter().max().unwrap();
    assert_eq!(stored.len() as u64, max, "gap-free 1..={max}");
}

#[test]
fn presence_lists_at_most_100_names_and_history_pages_are_clamped() {
    let server = TestServer::start();
    let crowd: Vec<Client> = (0..101).map(|_| server.chat()).collect();
    let mut late = server.chat();
    late.send_json(json!({"type": "join", "room": "lobby-2"}));
    late.recv_type("presence");
    // 102 distinct names in the lobby: the list stops at 100, the count does not.
    late.send_json(json!({"type": "resume", "room": "lobby", "after": 0}));
    let p = late.recv_type("presence");
    assert_eq!(p["count"], 102, "{p}");
    assert_eq!(p["members"].as_array().unwrap().len(), 100);
    drop(crowd);
    // limit is clamped to 1..=1000.
    for i in 0..3 {
        late.send_json(json!({"type": "message", "text": format!("h{i}"), "ref": i}));
        late.recv_type("ack");
    }
    let page = |q: &str| -> usize {
        let r = http_get(server.http, &format!("/api/rooms/lobby/messages?{q}"));
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["messages"].as_array().unwrap().len()
    };
    assert_eq!(page("limit=0"), 1, "at least one");
    assert_eq!(page("limit=2"), 2);
    assert_eq!(page("limit=99999"), 3, "at most 1000, here all three");
}

#[test]
fn a_failed_commit_is_refused_to_its_sender_seen_by_nobody_and_numbering_continues() {
    let server = TestServer::with(|c| c.hooks.fail_store_on_text = Some("lost".into()));
    let mut sender = server.chat();
    let mut other = server.chat();
    sender.send_json(json!({"type": "message", "text": "kept", "ref": 1}));
    assert_eq!(sender.recv_type("ack")["seq"], 1);
    sender.send_json(json!({"type": "message", "text": "lost", "ref": 2}));
    let e = sender.recv_type("error");
    assert_eq!(e["ref"], 2, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("message not stored"), "{e}");
    // Over HTTP: 503, and nothing stored.
    let posted = post_message(server.http, "lobby", r#"{"text":"lost"}"#);
    assert_eq!(posted.status, 503, "{}", posted.text());
    // The next message takes the number the failed one gave back: no gap.
    sender.send_json(json!({"type": "message", "text": "after", "ref": 3}));
    assert_eq!(sender.recv_type("ack")["seq"], 2);
    let seen: Vec<Value> = (0..2).map(|_| other.recv_type("message")).collect();
    assert_eq!(seen.iter().map(|m| m["text"].as_str().unwrap()).collect::<Vec<_>>(), ["kept", "after"]);
    let history = http_get(server.http, "/api/rooms/lobby/messages");
    let texts: Vec<String> = serde_json::from_slice::<Value>(&history.body).unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["kept", "after"]);
    let failures = metric(server.http, "threadchat_store_errors_total");
    assert_eq!(failures, 2);
}

#[test]
fn history_pages_back_with_before() {
    let server = TestServer::start();
    for i in 1..=10 {
        assert_eq!(post(&server, "dev", json!({"text": format!("m{i}"), "name": "ann"})).status, 201);
    }
    let seqs = |q: &str| history(&server, "dev", q).iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    // The page before 8: the latest three before it, oldest first.
    assert_eq!(seqs("?before=8&limit=3"), [5, 6, 7]);
    // Past the end: the newest page; at the start: nothing more.
    assert_eq!(seqs("?before=1000&limit=4"), [7, 8, 9, 10]);
    assert_eq!(seqs("?before=3&limit=50"), [1, 2]);
    assert_eq!(seqs("?before=1"), Vec::<u64>::new());
    // after= still pages forward.
    assert_eq!(seqs("?after=8"), [9, 10]);
    for bad in ["?before=x", "?before=-1", "?before=9223372036854775808", "?before=5&after=2"] {
        let r = http_get(server.http, &format!("/api/rooms/dev/messages{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
}
