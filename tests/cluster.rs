//! Several instances on one Redis backplane (`--redis`): one order per room everywhere,
//! cluster-wide presence, resume on another instance, and Redis dying mid-traffic without
//! losing an acknowledged message. Each test starts its own private redis-server. In the
//! Postgres pass the instances share one database (one history); otherwise each has its own
//! SQLite history, filled from the shared log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// `n` instances on `redis`, sharing a database in the Postgres pass.
fn cluster(redis: &RedisServer, n: usize) -> Vec<TestServer> {
    let shared_db = test_database();
    (0..n)
        .map(|_| {
            let server = TestServer::with(|c| {
                c.redis = Some(redis.url());
                c.database = shared_db.clone();
            });
            wait_ready(&server);
            server
        })
        .collect()
}

fn wait_ready(server: &TestServer) {
    wait_until("/readyz says 200", || http_get(server.http, "/readyz").status == 200);
}

/// Polls for up to `within` (longer than `WAIT`: presence expiry takes seconds).
fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lobby_members(server: &TestServer) -> u64 {
    let rooms: Value = serde_json::from_slice(&http_get(server.http, "/api/rooms").body).unwrap();
    rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "lobby")
        .map_or(0, |r| r["members"].as_u64().unwrap())
}

/// The lobby's whole stored history, page by page.
fn history(server: &TestServer) -> Vec<(u64, String)> {
    let mut all: Vec<(u64, String)> = vec![];
    loop {
        let after = all.last().map_or(0, |m| m.0);
        let body = http_get(server.http, &format!("/api/rooms/lobby/messages?after={after}&limit=1000")).body;
        let v: Value = serde_json::from_slice(&body).unwrap();
        let page = v["messages"].as_array().unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page.iter().map(|m| (m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap().to_string())));
    }
}

#[test]
fn three_instances_deliver_every_message_everywhere_in_one_order() {
    let redis = RedisServer::start();
    let servers = cluster(&redis, 3);
    let mut clients: Vec<Client> = servers.iter().map(|s| s.chat()).collect();
    // Each instance's client sends 100 messages at once (pipelined), all interleaving.
    for (i, c) in clients.iter_mut().enumerate() {
        for k in 0..100 {
            c.say(&format!("from {i}: {k}"));
        }
    }
    let mut seen: Vec<Vec<(u64, String)>> = vec![];
    for c in &mut clients {
        let mut got = vec![];
        while got.len() < 300 {
            let m = c.recv_type("message");
            got.push((m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap().to_string()));
        }
        seen.push(got);
    }
    assert!(seen[0].windows(2).all(|w| w[1].0 == w[0].0 + 1), "gap-free seq");
    assert_eq!(seen[0], seen[1], "instances 0 and 1 saw the same order");
    assert_eq!(seen[0], seen[2], "instances 0 and 2 saw the same order");
    let texts: BTreeSet<&String> = seen[0].iter().map(|(_, t)| t).collect();
    assert_eq!(texts.len(), 300, "each message exactly once");
    let metrics = http_get(servers[0].http, "/metrics").text();
    assert!(metrics.contains("threadchat_backplane_ready 1\n"), "{metrics}");
    // Every instance stored the same history.
    for s in &servers {
        assert_eq!(history(s), seen[0]);
    }
}

fn rename(c: &mut Client, name: &str) {
    c.send_json(json!({"type": "name", "name": name}));
    c.recv_type("name");
}

/// Reads `c` until a `kind` event (join/leave) for `name` arrives.
fn expect_notice(c: &mut Client, kind: &str, name: &str) {
    loop {
        let v = c.recv_type(kind);
        if v["name"] == name {
            assert_eq!(v["room"], "lobby", "{v}");
            return;
        }
    }
}

#[test]
fn presence_and_rooms_are_cluster_wide_and_a_crashed_instance_expires() {
    let redis = RedisServer::start();
    let a = BinaryServer::start(&["--redis", &redis.url()]);
    let b = &cluster(&redis, 1)[0];
    let mut ada = Client::connect(&a.chat_url());
    rename(&mut ada, "ada");
    eventually("B counts ada, who is on A", Duration::from_secs(5), || lobby_members(b) == 1);
    // bob arrives on B: the lobby's presence lists ada.
    let mut ws = connect_raw(&format!("ws://{}/ws", b.ws)).unwrap();
    let welcome = read_json(&mut ws);
    let presence = read_json(&mut ws);
    let user = welcome["user"].as_str().unwrap().to_string();
    let names: Vec<&str> =
        presence["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ada"), "presence on B lists ada from A: {presence}");
    assert_eq!(presence["count"], 2, "{presence}");
    let mut bob = Client {
        ws,
        id: welcome["id"].as_u64().unwrap(),
        user,
        name: welcome["name"].as_str().unwrap().to_string(),
        identity: None,
    };
    // carol arrives on A: bob, on B, is told.
    let mut carol = Client::connect(&a.chat_url());
    rename(&mut carol, "carol");
    expect_notice(&mut bob, "join", "carol");
    eventually("A counts bob", Duration::from_secs(5), || {
        serde_json::from_slice::<Value>(&http_get(a.http, "/api/rooms").body).unwrap()["rooms"][0]["members"] == 3
    });
    // A crashes (kill -9): once its presence entry expires, B stops counting its members
    // and bob gets their leaves.
    drop(a);
    eventually("A's entries expire", Duration::from_secs(15), || lobby_members(b) == 1);
    expect_notice(&mut bob, "leave", "ada");
    drop((ada, carol));
}

#[test]
fn a_client_resumes_on_another_instance() {
    let redis = RedisServer::start();
    let servers = cluster(&redis, 2);
    let (a, b) = (&servers[0], &servers[1]);
    let mut on_a = a.chat();
    on_a.say("before");
    let last = on_a.recv_type("message")["seq"].as_u64().unwrap();
    drop(on_a); // the client goes away...
    let mut sender = b.chat();
    for i in 0..20 {
        sender.say(&format!("missed {i}"));
    }
    for _ in 0..20 {
        sender.recv_type("message");
    }
    // ...and comes back on the other instance, asking for what it missed.
    let mut back = connect_raw(&format!("ws://{}/ws?resume=lobby:{last}", b.ws)).unwrap();
    assert_eq!(read_json(&mut back)["type"], "welcome");
    let mut next_message = || loop {
        let v = read_json(&mut back);
        if v["type"] == "message" {
            return v;
        }
    };
    for i in 0..20 {
        let m = next_message();
        assert_eq!(
            (m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap()),
            (last + 1 + i, format!("missed {i}").as_str())
        );
    }
    sender.say("live again");
    assert_eq!(next_message()["text"], "live again");
}

/// Sends numbered messages one after another until `stop`, returning (text → acked seq)
/// and how many were refused with an error.
fn keep_sending(
    mut c: Client,
    label: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (BTreeMap<String, u64>, usize) {
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let text = format!("{label}:{n}");
        c.send_json(json!({"type": "message", "text": text, "ref": n}));
        // Its ack or its error (other traffic skipped); errors come at once while Redis is
        // down, so slow down then.
        loop {
            let v = c.recv();
            match v["type"].as_str() {
                Some("ack") if v["ref"] == n => {
                    acked.insert(text, v["seq"].as_u64().unwrap());
                    break;
                }
                Some("error") if v["ref"] == n => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    break;
                }
                _ => {}
            }
        }
    }
    (acked, refused)
}

#[test]
fn redis_dying_mid_traffic_loses_no_acknowledged_message_and_readyz_follows() {
    let mut redis = RedisServer::start();
    let servers = cluster(&redis, 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (c, stop) = (s.chat(), stop.clone());
            std::thread::spawn(move || keep_sending(c, i, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500)); // traffic flowing (not waiting on a condition)
    redis.kill();
    for s in &servers {
        wait_until("/readyz says 503 without Redis", || http_get(s.http, "/readyz").status == 503);
        assert_eq!(http_get(s.http, "/healthz").status, 200, "still alive");
    }
    // A message sent now is refused with an error: never acknowledged, never silently lost.
    let mut probe = servers[0].chat();
    probe.send_json(json!({"type": "message", "text": "during the outage", "ref": 1}));
    let reply = probe.recv_type("error");
    assert_eq!(reply["ref"], 1, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("Redis"), "{reply}");
    // Over HTTP too: 503, and nothing stored.
    let posted = post_message(servers[0].http, "lobby", r#"{"text":"during the outage"}"#);
    assert_eq!(posted.status, 503, "{}", posted.text());
    redis.restart();
    for s in &servers {
        wait_ready(s);
    }
    std::thread::sleep(Duration::from_millis(500)); // and traffic flows again
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    for t in senders {
        let (a, r) = t.join().expect("sender thread");
        acked.extend(a);
        refused += r;
    }
    // (The senders may or may not have been refused: one waiting for an ack when Redis
    // died gets it once Redis is back and the log is read again.)
    assert!(acked.len() >= 50, "{} acknowledged ({refused} refused)", acked.len());
    // Every acknowledged message is in every instance's history, under its acked seq, and
    // the histories are identical and gap-free.
    let want: BTreeSet<(u64, String)> = acked.iter().map(|(t, s)| (*s, t.clone())).collect();
    for s in &servers {
        eventually("history complete", Duration::from_secs(5), || {
            let h: BTreeSet<(u64, String)> = history(s).into_iter().collect();
            want.is_subset(&h)
        });
    }
    let h0 = history(&servers[0]);
    assert_eq!(h0, history(&servers[1]));
    assert!(h0.windows(2).all(|w| w[1].0 == w[0].0 + 1), "gap-free");
    // The message refused during the outage was not stored anywhere either.
    for s in &servers {
        assert!(!history(s).iter().any(|(_, text)| text == "during the outage"), "a refused message was stored");
    }
}

/// A message Redis acknowledged but that never comes back through the log (Redis lost it,
/// say, restarted without its append-only file): the sender is not left waiting forever —
/// after the confirm timeout (30 s; 2 s here) it gets an error with its `ref`.
#[test]
fn a_published_message_never_read_back_is_answered_after_the_confirm_timeout() {
    let redis = RedisServer::start();
    let server = TestServer::with(|c| {
        c.redis = Some(redis.url());
        c.hooks.lose_log_text = Some("lost".into());
        c.hooks.confirm_timeout = Duration::from_secs(2);
    });
    wait_ready(&server);
    let mut sender = server.chat();
    let mut other = server.chat();
    sender.send_json(json!({"type": "message", "text": "lost", "ref": 1}));
    let sent = Instant::now();
    // Waiting for the log, it is counted as pending (in /metrics)…
    wait_until("the message is pending", || metric(server.http, "threadchat_backplane_pending") == 1);
    let e = sender.recv_type("error");
    let took = sent.elapsed();
    assert_eq!(e["ref"], 1, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("message not confirmed"), "{e}");
    // Not before the timeout; after it, within a log read (0.5 s) and a loaded machine's margin.
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_millis(4500), "answered after {took:?}");
    // …and no longer once answered.
    assert_eq!(metric(server.http, "threadchat_backplane_pending"), 0);
    // Nobody saw it, and the next message goes through.
    sender.send_json(json!({"type": "message", "text": "after", "ref": 2}));
    assert!(sender.recv_type("ack")["seq"].as_u64().is_some());
    assert_eq!(other.recv_type("message")["text"], "after");
}

/// After Redis restarts, the publisher's old connection is dead; it must be replaced when
/// the reader reconnects, not discovered by failing: the first message once `/readyz` says
/// 200 again is acknowledged, not refused.
#[test]
fn after_a_redis_restart_the_first_message_is_acknowledged() {
    let mut redis = RedisServer::start();
    let server = cluster(&redis, 1).pop().unwrap();
    let mut c = server.chat();
    c.send_json(json!({"type": "message", "text": "before", "ref": 1}));
    assert_eq!(c.recv_type("ack")["ref"], 1);
    redis.kill();
    wait_until("/readyz says 503 without Redis", || http_get(server.http, "/readyz").status == 503);
    redis.restart();
    wait_ready(&server);
    c.send_json(json!({"type": "message", "text": "after", "ref": 2}));
    let reply = loop {
        let v = c.recv();
        if v["ref"] == 2 {
            break v;
        }
    };
    assert_eq!(reply["type"], "ack", "{reply}");
}

/// Issue #22 on a cluster: one user is one user on every instance (guest identities work
/// anywhere, ids never collide), a name is held by one user cluster-wide, a dm finds its
/// recipient on another instance, typing and renames cross, a signed-in owner takes its
/// name back from a guest elsewhere, and a crashed instance's names come free in seconds.
#[test]
fn users_names_dms_and_typing_are_one_across_instances() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let redis = RedisServer::start();
    let a = BinaryServer::start(&["--redis", &redis.url(), "--jwt-secret", SECRET, "--token", "a-token-for-guests"]);
    let b = {
        let b = TestServer::with(|c| {
            c.redis = Some(redis.url());
            c.jwt_secret = Some(SECRET.into());
            c.token = Some("a-token-for-guests".into());
        });
        wait_ready(&b);
        b
    };
    let guests = |url: String| format!("{url}?token=a-token-for-guests");
    let (url_a, url_b) = (guests(a.chat_url()), guests(b.chat_url()));
    let mut ann = Client::connect(&url_a);
    let mut bo = Client::connect(&url_b);
    assert_ne!(ann.user, bo.user, "guest ids never collide across instances");
    rename(&mut ann, "ann");
    // One key for the cluster: ann's identity is ann on B too.
    let ann_on_b = ann.again(&url_b);
    assert_eq!(ann_on_b.user, ann.user);
    drop(ann_on_b);
    // "ann" is ann's on every instance.
    bo.send_json(json!({"type": "name", "name": "ANN"}));
    assert!(bo.recv_type("error")["error"].as_str().unwrap().contains("belongs to someone else"));
    rename(&mut bo, "bo");
    // A dm by name from B reaches ann on A (once B has heard of her), only her.
    eventually("B knows ann", Duration::from_secs(5), || {
        bo.answered(json!({"type": "dm", "to": "ann", "text": "across", "ref": 1}), "ack")
    });
    let dm = ann.recv_type("dm");
    assert_eq!(
        (dm["text"].as_str(), dm["user"].as_str(), dm["to_user"].as_str()),
        (Some("across"), Some(bo.user.as_str()), Some(ann.user.as_str()))
    );
    // Typing crosses, with the user id.
    bo.send_json(json!({"type": "typing"}));
    let t = ann.recv_type("typing");
    assert_eq!(t["user"].as_str(), Some(bo.user.as_str()));
    // A rename on B shows on A as a rename of the same user, not a leave and a join (once
    // A knows bo by that name: a dm to "bo" from A is acknowledged).
    eventually("A knows bo", Duration::from_secs(5), || {
        ann.answered(json!({"type": "dm", "to": "bo", "text": "hello bo", "ref": 2}), "ack")
    });
    bo.send_json(json!({"type": "name", "name": "bonnie"}));
    let n = ann.recv_type("name");
    assert_eq!(
        (n["user"].as_str(), n["name"].as_str(), n["old"].as_str()),
        (Some(bo.user.as_str()), Some("bonnie"), Some("bo"))
    );
    // A guest on A holds "sam"; sam signs in on B: the guest on A is renamed within seconds.
    let mut guest = Client::connect(&url_a);
    rename(&mut guest, "sam");
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let sam = Client::signed_in(&b.chat_url(), &jwt(SECRET, json!({"sub": "u-sam", "name": "sam", "exp": exp})));
    assert_eq!(sam.name, "sam");
    let renamed = guest.recv_type("name");
    assert_eq!((renamed["user"].as_str(), renamed["old"].as_str()), (Some(guest.user.as_str()), Some("sam")));
    // A crashes (kill -9): within seconds its users' names are free on B.
    drop(a);
    eventually("ann's name is free after A crashed", Duration::from_secs(15), || {
        let mut c = Client::connect(&url_b);
        c.answered(json!({"type": "name", "name": "ann"}), "name")
    });
    drop((ann, guest));
}

#[test]
fn kicks_bans_and_deletions_take_effect_on_every_instance_within_a_second() {
    const ADMIN: &str = "admin-token-0123456789";
    let redis = RedisServer::start();
    let shared_db = test_database();
    let [a, b]: [TestServer; 2] = std::array::from_fn(|_| {
        let s = TestServer::with(|c| {
            c.redis = Some(redis.url());
            c.database = shared_db.clone();
            c.admin_token = Some(ADMIN.into());
        });
        wait_ready(&s);
        s
    });
    let mut bob = Client::connect(&b.chat_url());
    let mut watcher = Client::connect(&b.chat_url());
    let auth = format!("Authorization: Bearer {ADMIN}");
    let admin = |method: &str, path: &str, body: Value| {
        let text = body.to_string();
        let r = http_request_from(None, a.http, method, path, &[&auth, "Content-Type: application/json"], &text);
        (r.status, serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
    };
    // A kick on A closes bob on B with 4003, once A knows bob is connected (presence).
    eventually("A kicks bob, connected on B", Duration::from_secs(5), || {
        admin("POST", "/api/admin/kick", json!({"user": bob.user, "reason": "cool off"})).0 == 200
    });
    let started = Instant::now();
    let close = bob.expect_close().expect("a close frame");
    assert_eq!((u16::from(close.code), close.reason.as_str()), (4003, "kicked: cool off"));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // A ban on A: B refuses bob's identity within a second.
    let bob_url = format!("{}?identity={}", b.chat_url(), bob.identity.as_deref().unwrap());
    let (status, answer) = admin("POST", "/api/admin/ban", json!({"user": bob.user, "reason": "spam"}));
    assert_eq!(status, 200, "{answer}");
    let started = Instant::now();
    eventually(
        "B refuses bob",
        Duration::from_secs(1),
        || matches!(connect_raw(&bob_url), Err(tungstenite::Error::Http(r)) if r.status() == 403),
    );
    eprintln!("ban reached B in {:?}", started.elapsed());
    // A deletion on A: B's members are told, and B's history holds the tombstone.
    watcher.say("regrettable");
    let seq = watcher.recv_type("message")["seq"].as_u64().unwrap();
    eventually("A has the message", Duration::from_secs(5), || {
        admin("DELETE", &format!("/api/rooms/lobby/messages/{seq}"), Value::Null).0 == 200
    });
    assert_eq!(watcher.recv_type("deleted")["seq"], seq);
    eventually("B's history holds the tombstone", Duration::from_secs(1), || {
        let page: Value = serde_json::from_slice(&http_get(b.http, "/api/rooms/lobby/messages").body).unwrap();
        page["messages"].as_array().unwrap().iter().any(|m| m["seq"] == seq && m["deleted"] == true)
    });
    // B's audit log has what A did (its own copy, in its own store).
    let r = http_request(b.http, "GET", "/api/admin/audit", &[&auth]);
    let audit: Value = serde_json::from_slice(&r.body).unwrap();
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["delete", "ban", "kick"], "{audit}");
}
