//! Direct messages belong to two user ids: delivered to every connection of the recipient
//! and the sender, to nobody else, whatever names anyone takes; stored as a conversation
//! only those two users can resume.

use serde_json::{Value, json};

use crate::support::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn named(server: &TestServer, name: &str) -> Client {
    let mut c = server.chat();
    rename(&mut c, name);
    c
}

fn rename(c: &mut Client, name: &str) {
    c.send_json(json!({"type": "name", "name": name}));
    let v = c.recv_type("name");
    assert_eq!((v["name"].as_str(), v["user"].as_str()), (Some(name), Some(c.user.as_str())), "{v}");
    c.name = name.to_string();
}

/// The next event of `kind`, skipping the others.
fn next_dm(c: &mut Client) -> Value {
    c.recv_type("dm")
}

/// Says a marker in the lobby and returns every event of `kind` seen before it came back:
/// proves a negative (nothing of that kind arrived) without sleeping.
fn seen_before_marker(c: &mut Client, kind: &str) -> Vec<Value> {
    let marker = format!("marker-{}", c.id);
    c.say(&marker);
    let mut seen = vec![];
    loop {
        let v = c.recv();
        if v["type"] == "message" && v["text"] == marker.as_str() {
            return seen;
        }
        if v["type"] == kind {
            seen.push(v);
        }
    }
}

#[test]
fn a_dm_reaches_both_users_every_tab_and_nobody_else_and_can_be_resumed() {
    let server = TestServer::start();
    let url = server.chat_url();
    let mut alice1 = named(&server, "alice");
    // A second tab of alice: the same user (her identity), the same name.
    let mut alice2 = alice1.again(&url);
    assert_eq!(alice2.user, alice1.user);
    rename(&mut alice2, "alice");
    let mut bob = named(&server, "bob");
    let mut carol = named(&server, "carol");

    alice1.send_json(json!({"type": "dm", "to": "bob", "text": "psst", "ref": 7}));
    // Broadcast, then acknowledged (stored before either).
    let own = next_dm(&mut alice1);
    let ack = alice1.recv_type("ack");
    assert_eq!((ack["ref"].as_u64(), ack["seq"].as_u64()), (Some(7), own["seq"].as_u64()));
    for dm in [own, next_dm(&mut bob), next_dm(&mut alice2)] {
        assert_eq!(
            (dm["name"].as_str(), dm["user"].as_str(), dm["to"].as_str(), dm["to_user"].as_str(), dm["text"].as_str()),
            (Some("alice"), Some(alice1.user.as_str()), Some("bob"), Some(bob.user.as_str()), Some("psst"))
        );
        assert_eq!(dm["seq"], 1, "numbered per conversation");
        assert_eq!(dm["room"], ack["room"]);
    }
    // By user id, and to another case of a name: the same conversation.
    bob.send_json(json!({"type": "dm", "to_user": alice1.user, "text": "hi back"}));
    assert_eq!(next_dm(&mut alice2)["seq"], 2, "one conversation, whichever way it goes");
    carol.send_json(json!({"type": "dm", "to": "BOB", "text": "case-blind"}));
    let to_bob = loop {
        let dm = next_dm(&mut bob);
        if dm["text"] != "hi back" {
            break dm;
        }
    };
    assert_eq!((to_bob["text"].as_str(), to_bob["to_user"].as_str()), (Some("case-blind"), Some(bob.user.as_str())));
    // carol got none of alice and bob's.
    assert!(seen_before_marker(&mut carol, "dm").iter().all(|d| d["text"] == "case-blind"));

    // Either user resumes it from a seq, from a new connection of theirs.
    let mut bob2 = bob.again(&url);
    bob2.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    let texts: Vec<Value> = (0..2).map(|_| next_dm(&mut bob2)["text"].clone()).collect();
    assert_eq!(texts, [json!("psst"), json!("hi back")]);
    // carol's own conversation with alice is empty, by name or by id.
    carol.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    carol.send_json(json!({"type": "resume", "with_user": alice1.user, "after": 0}));
    assert!(seen_before_marker(&mut carol, "dm").is_empty());

    // Not a room: not listed, not readable as one, not joinable.
    let rooms: Value = serde_json::from_slice(&http_get(server.http, "/api/rooms").body).unwrap();
    assert!(!rooms.to_string().contains("dm:"), "{rooms}");
    let key = ack["room"].as_str().unwrap();
    assert_eq!(http_get(server.http, &format!("/api/rooms/{key}/messages")).status, 400);
    bob.send_json(json!({"type": "join", "room": key}));
    assert!(bob.recv_type("error")["error"].as_str().unwrap().contains("room"));

    // To nobody: an error with the ref, never an ack for a message nobody can read.
    alice1.send_json(json!({"type": "dm", "to": "nobody", "text": "hello?", "ref": 8}));
    let e = alice1.recv_type("error");
    assert_eq!(e["ref"], 8);
    assert!(e["error"].as_str().unwrap().contains("nobody is called"), "{e}");
    alice1.send_json(json!({"type": "dm", "to_user": "guest~000000000000000000000000", "text": "?", "ref": 9}));
    assert!(alice1.recv_type("error")["error"].as_str().unwrap().contains("no user"));
    for bad in [
        json!({"type": "dm", "text": "x"}),
        json!({"type": "dm", "to": "bob"}),
        json!({"type": "dm", "to": "", "text": "x"}),
        json!({"type": "dm", "to": "bob", "to_user": bob.user, "text": "x"}),
        json!({"type": "dm", "to_user": 7, "text": "x"}),
    ] {
        alice1.send_json(bad.clone());
        assert_eq!(alice1.recv_type("error")["type"], "error", "{bad}");
    }
}

/// Without authentication a name is first come, first served, but a conversation is not:
/// the next holder of a name reads nothing of the previous holder's.
#[test]
fn a_names_next_holder_reads_none_of_the_previous_holders_conversations() {
    let server = TestServer::start();
    let url = server.chat_url();
    let mut bob = named(&server, "bob");
    let mut alice = named(&server, "alice");
    alice.send_json(json!({"type": "dm", "to": "bob", "text": "a secret"}));
    assert_eq!(next_dm(&mut bob)["text"], "a secret");
    let bobs_identity = bob.identity.clone().unwrap();
    drop(bob);
    // Someone else takes "bob" once it is free, and asks for the conversation.
    let mut mallory = server.chat();
    wait_until("bob's name is free", || mallory.answered(json!({"type": "name", "name": "bob"}), "name"));
    mallory.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    assert!(seen_before_marker(&mut mallory, "dm").is_empty(), "mallory read bob's conversation");
    // alice's next dm to "bob" goes to whoever is bob now; the old one stays with bob's id.
    alice.send_json(json!({"type": "dm", "to": "bob", "text": "to the new bob"}));
    assert_eq!(next_dm(&mut mallory)["text"], "to the new bob");
    // The real bob comes back with his identity: his conversation is still his.
    let mut bob = Client::connect(&format!("{url}?identity={bobs_identity}"));
    bob.send_json(json!({"type": "resume", "with_user": alice.user, "after": 0}));
    assert_eq!(next_dm(&mut bob)["text"], "a secret");
    assert!(seen_before_marker(&mut bob, "dm").is_empty(), "only the one dm of his");
}

/// The attacks of issue #22 on a server with both a shared token and JWTs.
#[test]
fn a_guest_never_keeps_or_reads_as_a_signed_in_users_name_even_across_a_restart() {
    let dir = TempDir::new();
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let config = |c: &mut threadchat::Config| {
        c.jwt_secret = Some(SECRET.into());
        c.token = Some("a-shared-token-for-guests".into());
    };
    let guest_headers = [("Authorization", "Bearer a-shared-token-for-guests")];
    let bob_token = jwt(SECRET, json!({"sub": "u-bob", "name": "bob", "exp": exp}));
    let alice_token = jwt(SECRET, json!({"sub": "u-alice", "name": "alice", "exp": exp}));
    {
        let server = TestServer::in_dir(&dir.0, config);
        let url = server.chat_url();
        // A guest takes "bob" before bob's first sign-in.
        let mut guest = Client::connect_headers(&url, &guest_headers);
        rename(&mut guest, "bob");
        let mut bob = Client::signed_in(&url, &bob_token);
        assert_eq!((bob.user.as_str(), bob.name.as_str()), ("u-bob", "bob"));
        // The guest loses the name, and is told so.
        let renamed = guest.recv_type("name");
        assert_eq!(renamed["user"].as_str(), Some(guest.user.as_str()));
        assert_eq!(renamed["old"], "bob");
        assert_ne!(renamed["name"], "bob");
        // alice's dm to "bob" reaches bob and never the guest.
        let mut alice = Client::signed_in(&url, &alice_token);
        alice.send_json(json!({"type": "dm", "to": "bob", "text": "for bob only"}));
        assert_eq!(next_dm(&mut bob)["text"], "for bob only");
        assert!(seen_before_marker(&mut guest, "dm").is_empty(), "the guest received bob's dm");
        guest.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
        assert!(seen_before_marker(&mut guest, "dm").is_empty(), "the guest replayed bob's dm");
        // The guest cannot take the name back, by rename or on the plain endpoint.
        guest.send_json(json!({"type": "name", "name": "Bob"}));
        assert!(guest.recv_type("error")["error"].as_str().unwrap().contains("belongs to someone else"));
    }
    // After a restart, with bob offline: the name is still his.
    let server = TestServer::in_dir(&dir.0, config);
    let url = server.chat_url();
    let mut guest = Client::connect_headers(&url, &guest_headers);
    guest.send_json(json!({"type": "name", "name": "BOB"}));
    assert!(guest.recv_type("error")["error"].as_str().unwrap().contains("belongs to someone else"));
    let mut plain = connect_with(&format!("ws://{}/?name=bob", server.ws), &guest_headers).expect("plain upgrade");
    let first = plain.read().expect("an error line");
    assert!(first.to_text().unwrap().contains("belongs to someone else"), "{first:?}");
    // A post under bob's name without bob's token is refused too.
    let r = http_request_from(
        None,
        server.http,
        "POST",
        "/api/rooms/lobby/messages",
        &["Authorization: Bearer a-shared-token-for-guests", "Content-Type: application/json"],
        r#"{"text":"as bob","name":"bob"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // And a dm to bob while he is away is kept for him (he is a known signed-in user).
    let mut alice = Client::signed_in(&url, &alice_token);
    alice.send_json(json!({"type": "dm", "to": "bob", "text": "while you were away", "ref": 1}));
    assert_eq!(alice.recv_type("ack")["ref"], 1);
    let mut bob = Client::signed_in(&url, &bob_token);
    bob.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    let texts: Vec<Value> = (0..2).map(|_| next_dm(&mut bob)["text"].clone()).collect();
    assert_eq!(texts, [json!("for bob only"), json!("while you were away")]);
}

#[test]
fn two_jwt_users_with_one_name_claim_get_two_names_and_never_each_others_dms() {
    let server = TestServer::with(|c| c.jwt_secret = Some(SECRET.into()));
    let url = server.chat_url();
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let sign = |sub: &str, name: &str| jwt(SECRET, json!({"sub": sub, "name": name, "exp": exp}));
    let mut sam1 = Client::signed_in(&url, &sign("u-1", "sam"));
    let mut sam2 = Client::signed_in(&url, &sign("u-2", "Sam"));
    assert_eq!((sam1.name.as_str(), sam2.name.as_str()), ("sam", "Sam-2"));
    // The same every time: u-2 is Sam-2 again on its next connection.
    assert_eq!(Client::signed_in(&url, &sign("u-2", "sam")).name, "sam-2");
    let mut alice = Client::signed_in(&url, &sign("u-alice", "alice"));
    alice.send_json(json!({"type": "dm", "to": "sam", "text": "for u-1"}));
    assert_eq!(next_dm(&mut sam1)["to_user"], "u-1");
    assert!(seen_before_marker(&mut sam2, "dm").is_empty(), "u-2 got u-1's dm");
    sam2.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    assert!(seen_before_marker(&mut sam2, "dm").is_empty(), "u-2 replayed u-1's dm");
    // A presence list tells the two apart by user id.
    sam1.send_json(json!({"type": "join", "room": "sams"}));
    while sam1.recv_type("presence")["room"] != "sams" {}
    sam2.send_json(json!({"type": "join", "room": "sams"}));
    let presence = loop {
        let v = sam2.recv_type("presence");
        if v["room"] == "sams" {
            break v;
        }
    };
    let members: Vec<(&str, &str)> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["name"].as_str().unwrap()))
        .collect();
    assert_eq!(members, [("u-2", "Sam-2"), ("u-1", "sam")], "{presence}");
}

#[test]
fn a_forged_altered_or_foreign_identity_is_refused_with_401() {
    let server = TestServer::start();
    let url = server.chat_url();
    let guest = server.chat();
    let identity = guest.identity.clone().unwrap();
    let (user, mac) = identity.rsplit_once('.').unwrap();
    let other = server.chat();
    let other_user = other.user.clone();
    let foreign = {
        let dir = TempDir::new();
        let elsewhere = TestServer::in_dir(&dir.0, |_| {});
        elsewhere.chat().identity.unwrap()
    };
    for bad in [
        format!("{other_user}.{mac}"), // someone else's id with this MAC
        format!("{user}.{mac}x"),      // altered MAC
        user.to_string(),              // no MAC
        "u-bob.AAAA".to_string(),      // not a guest id
        foreign,                       // another server's key
    ] {
        let status = refused_status(connect_raw(&format!("{url}?identity={bad}")));
        assert_eq!(status, 401, "{bad}");
        let status = refused_status(connect_with(&url, &[("Cookie", &format!("threadchat_identity={bad}"))]));
        assert_eq!(status, 401, "cookie {bad}");
    }
    // The real one, in the URL or the cookie, is the same user.
    assert_eq!(guest.again(&url).user, guest.user);
    let by_cookie = Client::connect_headers(&url, &[("Cookie", &format!("threadchat_identity={identity}"))]);
    assert_eq!(by_cookie.user, guest.user);
    // The page asks whether its identity is still good when a connection is refused.
    let check = |q: &str| http_get(server.http, &format!("/api/identity{q}"));
    let good = check(&format!("?identity={identity}"));
    assert_eq!(good.status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&good.body).unwrap()["user"].as_str(), Some(guest.user.as_str()));
    assert_eq!(check(&format!("?identity={user}.{mac}x")).status, 401);
    assert_eq!(check("").status, 400);
    // A neighbour is served throughout.
    assert!(Client::connect_from(Some(other_ip()), &url).user.starts_with("guest~"));
}

#[test]
fn a_long_conversation_resumes_whole_however_full_the_outbox() {
    let server = TestServer::start();
    let mut bob = named(&server, "bob");
    let mut alice = named(&server, "alice");
    let text = "x".repeat(3996); // with the "NNN " prefix, 4,000 characters: the most a text may have
    // 300 dms of 4,000 characters: 1.2 MB, over the 1 MiB outbox cap. Sent in rounds read
    // back before the next, within the message rate's burst.
    for round in 0..15 {
        for i in 0..20 {
            alice.send_json(json!({"type": "dm", "to": "bob", "text": format!("{:03} {text}", round * 20 + i)}));
        }
        for _ in 0..20 {
            next_dm(&mut alice);
            next_dm(&mut bob);
        }
        std::thread::sleep(std::time::Duration::from_millis(1000)); // the message rate: 20/s
    }
    let mut bob2 = bob.again(&server.chat_url());
    bob2.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    for i in 0..300 {
        let dm = next_dm(&mut bob2);
        assert!(dm["text"].as_str().unwrap().starts_with(&format!("{i:03} ")), "dm {i}: {}", &dm["text"]);
    }
}

#[test]
fn conversations_are_budgeted_per_server_and_per_address() {
    // 2 in all; 1 % of that rounds up to 1 per address.
    let server = TestServer::with(|c| c.max_conversations = 2);
    let url = server.chat_url();
    let name = |mut c: Client, n: &str| {
        rename(&mut c, n);
        c
    };
    let _bob = named(&server, "bob");
    let _carol = named(&server, "carol");
    let mut alice = named(&server, "alice");
    let mut other = name(Client::connect_from(Some("127.0.0.2".parse().unwrap()), &url), "otto");
    let mut third = name(Client::connect_from(Some("127.0.0.3".parse().unwrap()), &url), "tess");

    alice.send_json(json!({"type": "dm", "to": "bob", "text": "one"}));
    assert_eq!(next_dm(&mut alice)["text"], "one");
    // A second new conversation from the same address: refused, whoever it is to.
    alice.send_json(json!({"type": "dm", "to": "carol", "text": "two", "ref": 2}));
    let e = alice.recv_type("error");
    assert!(e["error"].as_str().unwrap().contains("your address has started 1"), "{e}");
    // Another address has its own share; past the server's budget, nobody starts one.
    other.send_json(json!({"type": "dm", "to": "bob", "text": "from otto"}));
    assert_eq!(next_dm(&mut other)["text"], "from otto");
    third.send_json(json!({"type": "dm", "to": "bob", "text": "from tess"}));
    let e = third.recv_type("error");
    assert!(e["error"].as_str().unwrap().contains("--max-conversations"), "{e}");
    // Known conversations go on.
    alice.send_json(json!({"type": "dm", "to": "bob", "text": "still here"}));
    assert_eq!(next_dm(&mut alice)["text"], "still here");
}

#[test]
fn the_conversation_budget_counts_the_conversations_in_the_history_after_a_restart() {
    let dir = TempDir::new();
    let (bob_identity, alice_identity) = {
        let server = TestServer::in_dir(&dir.0, |c| c.max_conversations = 1);
        let bob = named(&server, "bob");
        let mut alice = named(&server, "alice");
        alice.send_json(json!({"type": "dm", "to": "bob", "text": "before"}));
        assert_eq!(next_dm(&mut alice)["text"], "before");
        (bob.identity.unwrap(), alice.identity.unwrap())
    };
    // The same guests come back (the identity key is kept in the data dir).
    let server = TestServer::in_dir(&dir.0, |c| c.max_conversations = 1);
    let url = server.chat_url();
    let bob = Client::connect(&format!("{url}?identity={bob_identity}"));
    // The one conversation the budget allows exists already: a new one is refused...
    let mut otto = Client::connect_from(Some("127.0.0.2".parse().unwrap()), &url);
    otto.send_json(json!({"type": "dm", "to_user": bob.user, "text": "new"}));
    assert!(otto.recv_type("error")["error"].as_str().unwrap().contains("--max-conversations"));
    // ...and the old one goes on.
    let mut alice = Client::connect(&format!("{url}?identity={alice_identity}"));
    alice.send_json(json!({"type": "dm", "to_user": bob.user, "text": "after"}));
    assert_eq!(next_dm(&mut alice)["seq"], 2);
}

/// One guest identity is one user: its connections are capped like a JWT user's
/// (`--max-connections-per-user`, 8), from any address; another guest is not affected.
#[test]
fn one_guest_identity_holds_at_most_eight_connections() {
    let server = TestServer::start();
    let url = server.chat_url();
    let first = server.chat();
    let tabs: Vec<Client> = (0..7).map(|_| first.again(&url)).collect();
    let identity = first.identity.clone().unwrap();
    let ninth = connect_from(Some(other_ip()), &format!("{url}?identity={identity}"), &[]);
    assert_eq!(refused_status(ninth), 429);
    assert!(Client::connect_from(Some(other_ip()), &url).user != first.user, "another guest is served");
    drop(tabs);
    wait_until("a tab closed frees a slot", || connect_raw(&format!("{url}?identity={identity}")).is_ok());
}
