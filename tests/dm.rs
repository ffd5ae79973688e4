//! Direct messages: delivered to every connection of the recipient's name and the
//! sender's, to nobody else; stored as a conversation either party can resume.

use serde_json::{Value, json};
use tungstenite::Message;

use crate::support::*;

fn named(server: &TestServer, name: &str) -> Client {
    let mut c = server.chat();
    c.send_json(json!({"type": "name", "name": name}));
    c.recv_type("name");
    c
}

#[test]
fn a_dm_reaches_both_parties_every_tab_and_nobody_else_and_can_be_resumed() {
    let server = TestServer::start();
    let mut alice1 = named(&server, "alice");
    let mut alice2 = named(&server, "alice");
    let mut bob = named(&server, "bob");
    let mut carol = named(&server, "carol");

    alice1.send_json(json!({"type": "dm", "to": "bob", "text": "psst", "ref": 7}));
    // Broadcast, then acknowledged (stored before either).
    let own = alice1.recv_type("dm");
    let ack = alice1.recv_type("ack");
    assert_eq!((ack["ref"].as_u64(), ack["seq"].as_u64()), (Some(7), own["seq"].as_u64()));
    for dm in [own, bob.recv_type("dm"), alice2.recv_type("dm")] {
        assert_eq!(
            (dm["name"].as_str(), dm["to"].as_str(), dm["text"].as_str()),
            (Some("alice"), Some("bob"), Some("psst"))
        );
        assert_eq!(dm["seq"], 1, "numbered per conversation");
        assert_eq!(dm["room"], ack["room"]);
    }
    bob.send_json(json!({"type": "dm", "to": "alice", "text": "hi back"}));
    assert_eq!(alice2.recv_type("dm")["seq"], 2, "one conversation, whichever way it goes");
    // carol got neither: her next event is the lobby message said after them.
    bob.say("in the open");
    let next = loop {
        let v = carol.recv();
        if v["type"] != "join" && v["type"] != "name" {
            break v;
        }
    };
    assert_eq!((next["type"].as_str(), next["text"].as_str()), (Some("message"), Some("in the open")), "{next}");

    // Either party resumes the conversation from a seq; a third name has its own, empty one.
    let mut bob2 = named(&server, "bob");
    bob2.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    let texts: Vec<Value> = (0..2).map(|_| bob2.recv_type("dm")["text"].clone()).collect();
    assert_eq!(texts, [json!("psst"), json!("hi back")]);
    carol.send_json(json!({"type": "resume", "with": "alice", "after": 0}));
    carol.say("marker");
    let v = carol.recv_type("message");
    assert_eq!(v["text"], "marker", "carol's conversation with alice is empty");

    // Not a room: not listed, not readable as one, not joinable.
    let rooms: Value = serde_json::from_slice(&http_get(server.http, "/api/rooms").body).unwrap();
    assert!(!rooms.to_string().contains("dm:"), "{rooms}");
    let key = ack["room"].as_str().unwrap();
    assert_eq!(http_get(server.http, &format!("/api/rooms/{key}/messages")).status, 400);
    bob.send_json(json!({"type": "join", "room": key}));
    assert!(bob.recv_type("error")["error"].as_str().unwrap().contains("room"));

    // To nobody connected: an error with the ref, nothing stored.
    alice1.send_json(json!({"type": "dm", "to": "nobody", "text": "hello?", "ref": 8}));
    let e = alice1.recv_type("error");
    assert_eq!(e["ref"], 8);
    assert!(e["error"].as_str().unwrap().contains("nobody named"), "{e}");
    for bad in [
        json!({"type": "dm", "text": "x"}),
        json!({"type": "dm", "to": "bob"}),
        json!({"type": "dm", "to": "", "text": "x"}),
    ] {
        alice1.send_json(bad.clone());
        assert_eq!(alice1.recv_type("error")["type"], "error", "{bad}");
    }
}

#[test]
fn with_jwts_only_signed_in_names_send_and_receive_dms() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let server = TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.token = Some("a-shared-token-for-guests".into());
    });
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let open = |header: String| {
        let mut ws = connect_with(&server.chat_url(), &[("Authorization", &header)]).unwrap();
        read_json(&mut ws);
        read_json(&mut ws);
        ws
    };
    let mut ada = open(format!("Bearer {}", jwt(SECRET, json!({"name": "ada", "exp": exp}))));
    let mut bo = open(format!("Bearer {}", jwt(SECRET, json!({"name": "bo", "exp": exp}))));
    let mut guest = open("Bearer a-shared-token-for-guests".into());
    let send =
        |ws: &mut tungstenite::WebSocket<std::net::TcpStream>, v: Value| ws.send(Message::text(v.to_string())).unwrap();
    let next_of = |ws: &mut tungstenite::WebSocket<std::net::TcpStream>, kind: &str| loop {
        let v = read_json(ws);
        if v["type"] == kind {
            return v;
        }
    };

    send(&mut ada, json!({"type": "dm", "to": "bo", "text": "signed"}));
    assert_eq!(next_of(&mut bo, "dm")["text"], "signed");
    // A guest (shared token) may neither send nor read conversations, even named like a party.
    send(&mut guest, json!({"type": "dm", "to": "bo", "text": "as a guest"}));
    assert!(next_of(&mut guest, "error")["error"].as_str().unwrap().contains("JWT"));
    send(&mut guest, json!({"type": "resume", "with": "ada", "after": 0}));
    assert!(next_of(&mut guest, "error")["error"].as_str().unwrap().contains("JWT"));
    // To a name no JWT has signed in with: refused.
    send(&mut ada, json!({"type": "dm", "to": "eve", "text": "?"}));
    assert!(next_of(&mut ada, "error")["error"].as_str().unwrap().contains("no signed-in user"));
}

#[test]
fn conversations_are_budgeted_per_server_and_per_address() {
    // 2 in all; 1 % of that rounds up to 1 per address.
    let server = TestServer::with(|c| c.max_conversations = 2);
    let url = server.chat_url();
    let name = |mut c: Client, n: &str| {
        c.send_json(json!({"type": "name", "name": n}));
        c.recv_type("name");
        c
    };
    let _bob = named(&server, "bob");
    let _carol = named(&server, "carol");
    let mut alice = named(&server, "alice");
    let mut other = name(Client::connect_from(Some("127.0.0.2".parse().unwrap()), &url), "otto");
    let mut third = name(Client::connect_from(Some("127.0.0.3".parse().unwrap()), &url), "tess");

    alice.send_json(json!({"type": "dm", "to": "bob", "text": "one"}));
    assert_eq!(alice.recv_type("dm")["text"], "one");
    // A second new conversation from the same address: refused, whatever the name.
    alice.send_json(json!({"type": "dm", "to": "carol", "text": "two", "ref": 2}));
    let e = alice.recv_type("error");
    assert!(e["error"].as_str().unwrap().contains("your address has started 1"), "{e}");
    // Another address has its own share; past the server's budget, nobody starts one.
    other.send_json(json!({"type": "dm", "to": "bob", "text": "from otto"}));
    assert_eq!(other.recv_type("dm")["text"], "from otto");
    third.send_json(json!({"type": "dm", "to": "bob", "text": "from tess"}));
    let e = third.recv_type("error");
    assert!(e["error"].as_str().unwrap().contains("--max-conversations"), "{e}");
    // Known conversations go on.
    alice.send_json(json!({"type": "dm", "to": "bob", "text": "still here"}));
    assert_eq!(alice.recv_type("dm")["text"], "still here");
}

#[test]
fn the_conversation_budget_counts_the_conversations_in_the_history_after_a_restart() {
    let dir = TempDir::new();
    {
        let server = TestServer::in_dir(&dir.0, |c| c.max_conversations = 1);
        let _bob = named(&server, "bob");
        let mut alice = named(&server, "alice");
        alice.send_json(json!({"type": "dm", "to": "bob", "text": "before"}));
        assert_eq!(alice.recv_type("dm")["text"], "before");
    }
    let server = TestServer::in_dir(&dir.0, |c| c.max_conversations = 1);
    let _bob = named(&server, "bob");
    // The one conversation the budget allows exists already: a new one is refused...
    let url = server.chat_url();
    let mut otto = Client::connect_from(Some("127.0.0.2".parse().unwrap()), &url);
    otto.send_json(json!({"type": "name", "name": "otto"}));
    otto.recv_type("name");
    otto.send_json(json!({"type": "dm", "to": "bob", "text": "new"}));
    assert!(otto.recv_type("error")["error"].as_str().unwrap().contains("--max-conversations"));
    // ...and the old one goes on.
    let mut alice = named(&server, "alice");
    alice.send_json(json!({"type": "dm", "to": "bob", "text": "after"}));
    assert_eq!(alice.recv_type("dm")["seq"], 2);
}
