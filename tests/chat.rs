//! The chat protocol on `/ws`, over real sockets.

use std::collections::HashSet;

use serde_json::json;
use tungstenite::Message;

use crate::support::*;

/// A guest's default name, from its user id (so a returning guest shows under the same).
fn guest_name(user: &str) -> String {
    format!("guest-{}", &user["guest~".len()..][..6])
}

#[test]
fn welcome_gives_an_id_a_user_and_a_name() {
    let server = TestServer::start();
    let a = server.chat();
    let b = server.chat();
    assert_ne!(a.id, b.id);
    assert_ne!(a.user, b.user);
    assert!(a.user.starts_with("guest~") && a.user.len() == 6 + 24, "{}", a.user);
    assert_eq!(a.name, guest_name(&a.user));
    // The same guest again (a reload): same user, same name, another connection.
    drop(a);
    let again = b.again(&server.chat_url());
    assert_eq!((again.user.as_str(), again.name.as_str()), (b.user.as_str(), b.name.as_str()));
    assert_ne!(again.id, b.id);
}

#[test]
fn message_reaches_everyone_including_the_sender() {
    let server = TestServer::start();
    let mut a = server.chat();
    let mut b = server.chat();
    a.recv_type("join"); // b's arrival
    a.say("hello there");
    let (sender, user, name) = (a.id, a.user.clone(), a.name.clone());
    for client in [&mut a, &mut b] {
        let m = client.recv_type("message");
        assert_eq!(m["text"], "hello there");
        assert_eq!(m["id"], sender);
        assert_eq!(m["user"].as_str(), Some(user.as_str()));
        assert_eq!(m["name"].as_str(), Some(name.as_str()));
        assert!(m["seq"].as_u64().unwrap() >= 1);
        assert!(m["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }
}

#[test]
fn every_client_sees_every_message_in_the_same_seq_order() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 50;
    let server = TestServer::start();
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.chat()).collect();
    // Make sure everyone is a member before the burst starts.
    wait_until("all joined", || server.hub_len() == CLIENTS);
    let senders: Vec<_> = clients
        .iter_mut()
        .map(|c| {
            let url = server.chat_url();
            let id = c.id;
            std::thread::spawn(move || {
                let mut sender = Client::connect(&url);
                for i in 0..PER_CLIENT {
                    sender.say(&format!("from {id} #{i}"));
                }
                // Stay connected until our own last message came back.
                loop {
                    let m = sender.recv_type("message");
                    if m["id"] == sender.id && m["text"] == format!("from {id} #{}", PER_CLIENT - 1) {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut orders = vec![];
    for c in clients.iter_mut() {
        let mut seqs = vec![];
        let mut texts = HashSet::new();
        while seqs.len() < CLIENTS * PER_CLIENT {
            let m = c.recv_type("message");
            seqs.push(m["seq"].as_u64().unwrap());
            texts.insert(m["text"].as_str().unwrap().to_string());
        }
        assert_eq!(texts.len(), CLIENTS * PER_CLIENT, "no duplicates, nothing missing");
        orders.push(seqs);
    }
    for s in senders {
        s.join().unwrap();
    }
    let first = &orders[0];
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "seq increases by one: {first:?}");
    for other in &orders[1..] {
        assert_eq!(other, first, "every client sees the same order");
    }
}

#[test]
fn join_and_leave_are_announced() {
    let server = TestServer::start();
    let mut a = server.chat();
    let b = server.chat();
    let join = a.recv_type("join");
    assert_eq!(join["id"], b.id);
    assert_eq!(join["name"], b.name);
    drop(b); // TCP closed without a Close frame: still one leave
    let leave = a.recv_type("leave");
    assert_eq!(leave["id"], join["id"]);
    wait_until("b removed", || server.hub_len() == 1);
}

#[test]
fn polite_close_is_answered_and_announced() {
    let server = TestServer::start();
    let mut a = server.chat();
    let mut b = server.chat();
    a.recv_type("join");
    let normal = tungstenite::protocol::frame::coding::CloseCode::Normal;
    b.ws.close(Some(tungstenite::protocol::CloseFrame { code: normal, reason: "bye".into() })).unwrap();
    // The documented reply to a client's Close 1000 is 1000.
    assert_eq!(b.expect_close().map(|f| f.code), Some(normal));
    assert_eq!(a.recv_type("leave")["id"], b.id);
}

#[test]
fn name_change_is_validated_and_announced() {
    let server = TestServer::start();
    let mut a = server.chat();
    let mut b = server.chat();
    a.recv_type("join");
    b.send_json(json!({"type": "name", "name": "Ada"}));
    let (b_id, b_name) = (b.id, b.name.clone());
    for c in [&mut a, &mut b] {
        let n = c.recv_type("name");
        assert_eq!(n["id"], b_id);
        assert_eq!(n["name"], "Ada");
        assert_eq!(n["old"], b_name);
    }
    b.say("hi");
    assert_eq!(a.recv_type("message")["name"], "Ada");

    for (bad, why) in [
        (json!(""), "must not be empty"),
        (json!("x".repeat(33)), "longer than 32"),
        (json!("evil\u{7}bell"), "control characters"),
        (json!(5), "must be a string"),
    ] {
        b.send_json(json!({"type": "name", "name": bad}));
        let e = b.recv_type("error");
        assert!(e["error"].as_str().unwrap().contains(why), "{e} should mention {why}");
    }
}

#[test]
fn bad_requests_get_an_error_and_the_connection_stays_open() {
    let server = TestServer::start();
    let mut c = server.chat();
    let cases: [(&str, &str); 7] = [
        ("not json", "invalid JSON"),
        ("{\"type\":\"message\"", "invalid JSON"),
        ("[]", "message must be a JSON object"),
        (r#"{"type":"shout","text":"x"}"#, "unknown type \"shout\""),
        (r#"{"type":"message"}"#, "missing \"text\""),
        (r#"{"type":"message","text":""}"#, "\"text\" must not be empty"),
        (r#"{"text":"no type"}"#, "missing \"type\""),
    ];
    for (input, want) in cases {
        c.ws.send(Message::text(input)).unwrap();
        let e = c.recv();
        assert_eq!(e, json!({"type": "error", "error": want}), "for input {input}");
    }
    let long = "y".repeat(threadchat::MAX_TEXT_CHARS + 1);
    c.say(&long);
    assert!(c.recv_type("error")["error"].as_str().unwrap().contains("longer than"));

    c.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert!(c.recv_type("error")["error"].as_str().unwrap().contains("binary"));

    // Hostile but valid text is carried verbatim; escaping is the page's job (textContent).
    let nasty = "<script>alert(1)</script> \u{202e}gnp.exe\n\tline two";
    c.say(nasty);
    assert_eq!(c.recv_type("message")["text"], nasty);
    c.say("nul \u{0} and escape \u{1b}[2J");
    assert!(c.recv_type("error")["error"].as_str().unwrap().contains("control characters"));
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let server = TestServer::start();
    let mut c = server.chat();
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    c.ws.send(Message::text(deep)).unwrap();
    assert_eq!(c.recv()["error"], "invalid JSON");
    c.say("still here");
    assert_eq!(c.recv_type("message")["text"], "still here");
}

#[test]
fn client_ids_do_not_repeat_across_a_restart() {
    // A page marks messages whose `id` is its own as "mine": after a restart, an id that
    // counted from 1 again would claim someone else's old messages in the history.
    let dir = TempDir::new();
    let first = {
        let server = TestServer::in_dir(&dir.0, |_| {});
        let mut a = server.chat();
        a.say("before the restart");
        a.recv_type("message");
        a.id
    };
    let server = TestServer::in_dir(&dir.0, |_| {});
    let b = server.chat();
    assert_ne!(b.id >> 32, first >> 32, "each run numbers from its own random base");
    assert_ne!(b.id, first);
    assert!(b.id < 1 << 53, "ids stay exact as JavaScript numbers");
    assert_eq!(b.name, guest_name(&b.user));
}

#[test]
fn typing_reaches_the_others_in_the_room_once_per_two_seconds_and_is_never_stored() {
    let server = TestServer::start();
    let mut alice = server.chat();
    let mut bob = server.chat();
    alice.recv_type("join");
    alice.send_json(json!({"type": "typing"}));
    let t = bob.recv_type("typing");
    assert_eq!((t["room"].as_str(), t["id"].as_u64()), (Some("lobby"), Some(alice.id)));
    assert_eq!(t["name"], alice.name.as_str());
    assert!(t["expires_ms"].as_u64().unwrap() >= 2000, "{t}");
    // A burst within the throttle is relayed no further: the next event bob sees is the
    // message after it. The sender never gets its own typing back.
    for _ in 0..10 {
        alice.send_json(json!({"type": "typing", "room": "lobby"}));
    }
    alice.say("done typing");
    assert_eq!(bob.recv()["type"], "message");
    assert_eq!(alice.recv()["type"], "message");
    // Not stored, not replayed: the history holds the message only.
    let r = http_get(server.http, "/api/rooms/lobby/messages");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v}");
    // Typing where one is not a member is an error, and reaches nobody; nor does it spend
    // that room's allowance: the first typing after joining is relayed.
    alice.send_json(json!({"type": "typing", "room": "elsewhere"}));
    assert!(alice.recv_type("error")["error"].as_str().unwrap().contains("not in room"));
    alice.send_json(json!({"type": "join", "room": "elsewhere"}));
    bob.send_json(json!({"type": "join", "room": "elsewhere"}));
    assert_eq!(bob.recv_type("presence")["room"], "elsewhere");
    alice.send_json(json!({"type": "typing", "room": "elsewhere"}));
    let t = bob.recv_type("typing");
    assert_eq!((t["room"].as_str(), t["user"].as_str()), (Some("elsewhere"), Some(alice.user.as_str())));
    // After the throttle, a new pause is relayed again.
    wait_until("the throttle let a second typing through", || {
        alice.send_json(json!({"type": "typing"}));
        std::thread::sleep(std::time::Duration::from_millis(250));
        bob.ws.get_mut().set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let got = matches!(bob.ws.read(), Ok(Message::Text(t)) if t.as_str().contains("\"typing\""));
        bob.ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
        got
    });
}

#[test]
fn a_bad_room_in_the_resume_url_is_refused_by_name() {
    let server = TestServer::start();
    let url = format!("{}?resume=Not%20A%20Room:0,lobby:0", server.chat_url());
    let mut ws = connect_raw(&url).unwrap();
    assert_eq!(read_json(&mut ws)["type"], "welcome");
    let e = read_json(&mut ws);
    assert_eq!(e["error"], "bad resume parameter \"Not A Room:0\"; expected ROOM:SEQ", "{e}");
    // The valid one is still done.
    assert_eq!(read_json(&mut ws)["room"], "lobby");
}

#[test]
fn resumes_in_the_url_spend_the_message_rate_and_the_rest_are_counted() {
    // 1 message a second in bursts of 2: two of the five resumes are done.
    let server = TestServer::with(|c| c.message_rate = 1.0);
    let url = format!("{}?resume=ra:0,rb:0,rc:0,rd:0,re:0", server.chat_url());
    let mut ws = connect_raw(&url).unwrap();
    let mut rooms = vec![];
    let error = loop {
        let v = read_json(&mut ws);
        match v["type"].as_str() {
            Some("presence") => rooms.push(v["room"].as_str().unwrap().to_string()),
            Some("error") => break v,
            _ => {}
        }
    };
    assert_eq!(error["error"], "rate limit: 3 resume(s) in the URL not done; send them as resume requests");
    assert_eq!(rooms, ["lobby", "ra", "rb"]);
}

/// Join and leave notices wait for the room's tick and go out together (chat/hub/notices.rs),
/// and what each member sees stays exact: a message never arrives before its sender's
/// `join`; a newcomer never gets a `join` for someone its `presence` already listed; and
/// after visitors come and go, every member's view (presence, plus joins, minus leaves) is
/// the room's membership.
#[test]
fn coalesced_notices_keep_every_members_view_exact() {
    let server = TestServer::start();
    let mut a = server.chat();
    let mut b = server.chat();
    b.say("first words");
    let mut joined = HashSet::new();
    loop {
        let e = a.recv();
        match e["type"].as_str() {
            Some("join") => assert!(joined.insert(e["user"].as_str().unwrap().to_string()), "one join per user: {e}"),
            Some("message") => {
                assert!(joined.contains(&b.user), "b's message came before b's join");
                break;
            }
            _ => {}
        }
    }

    // c arrives while (most likely) v's join is still waiting for the tick; then v goes.
    let v = server.chat();
    let mut c_ws = connect_with(&server.chat_url(), &[]).unwrap();
    assert_eq!(read_json(&mut c_ws)["type"], "welcome");
    let presence = read_json(&mut c_ws);
    assert_eq!(presence["type"], "presence");
    let listed: HashSet<String> =
        presence["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap().to_string()).collect();
    assert!(listed.contains(&a.user) && listed.contains(&b.user) && listed.contains(&v.user), "{presence}");
    drop(v);
    // Visitors who come and go, back to back.
    for _ in 0..10 {
        drop(server.chat());
    }
    wait_until("the visitors are gone", || server.hub_len() == 3);
    // A message flushes whatever notices still wait: after it, each view is complete.
    b.say("sync");
    let mut c_view = listed.clone();
    loop {
        let e = read_json(&mut c_ws);
        let user = e["user"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("join") => {
                assert!(!listed.contains(&user) || !c_view.contains(&user), "a join for someone c already saw: {e}");
                c_view.insert(user);
            }
            Some("leave") => assert!(c_view.remove(&user), "a leave for someone c never saw: {e}"),
            Some("message") if e["text"] == "sync" => break,
            _ => {}
        }
    }
    let mut a_view: HashSet<String> = joined.iter().cloned().chain([a.user.clone()]).collect();
    loop {
        let e = a.recv();
        let user = e["user"].as_str().unwrap_or_default().to_string();
        match e["type"].as_str() {
            Some("join") => assert!(a_view.insert(user), "a join for someone a already saw: {e}"),
            Some("leave") => assert!(a_view.remove(&user), "a leave for someone a never saw: {e}"),
            Some("message") if e["text"] == "sync" => break,
            _ => {}
        }
    }
    let c_user = presence["members"][0]["user"].as_str().unwrap().to_string();
    let truth: HashSet<String> = [a.user.clone(), b.user.clone(), c_user].into();
    assert_eq!(a_view, truth, "a's view");
    assert_eq!(c_view, truth, "c's view");
}
