//! The plain-text chat endpoint (`/`, both ports): the tutorials' clients, unchanged.

use std::net::TcpStream;

use serde_json::Value;
use tungstenite::{Message, WebSocket};

use crate::support::*;

/// The next text frame's text (control frames skipped; every read times out).
fn read_text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return t.as_str().to_string(),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a text frame, got {other:?}"),
            Err(e) => panic!("read failed (timeout is {WAIT:?}): {e}"),
        }
    }
}

fn plain(server: &TestServer, query: &str) -> WebSocket<TcpStream> {
    connect_raw(&format!("ws://{}/{query}", server.ws)).expect("plain upgrade")
}

fn history(server: &TestServer) -> Vec<Value> {
    let r = http_get(server.http, "/api/rooms/lobby/messages");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str::<Value>(&r.text()).unwrap()["messages"].as_array().unwrap().clone()
}

#[test]
fn plain_text_goes_both_ways_through_the_lobby_and_is_stored() {
    let server = TestServer::start();
    let mut json_client = server.chat();
    let mut tutorial = plain(&server, "");
    // A JSON client sees the plain client arrive like anyone else.
    let joined = json_client.recv_type("join");
    assert!(joined["name"].as_str().unwrap().starts_with("guest-"), "{joined}");

    // Plain text in: an ordinary chat message for JSON clients, the bare text for plain ones
    // (the sender too, as the tutorial's broadcast does).
    tutorial.send(Message::text("hi from the tutorial")).unwrap();
    let m = json_client.recv_type("message");
    assert_eq!((m["room"].as_str(), m["text"].as_str()), (Some("lobby"), Some("hi from the tutorial")));
    assert_eq!(m["name"], joined["name"]);
    assert_eq!(read_text(&mut tutorial), "hi from the tutorial");

    // A JSON client's lobby message reaches the plain client as its bare text; a message
    // in another room, and the notices of joins and leaves, do not reach it at all.
    let mut other = server.chat();
    other.send_json(serde_json::json!({"type": "join", "room": "dev"}));
    other.recv_type("presence");
    other.send_json(serde_json::json!({"type": "message", "room": "dev", "text": "not for the lobby"}));
    other.recv_type("message");
    drop(other);
    json_client.say("hi from JSON");
    assert_eq!(read_text(&mut tutorial), "hi from JSON");

    // Stored and numbered like any other message.
    let texts: Vec<String> = history(&server).iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["hi from the tutorial", "hi from JSON"]);
}

#[test]
fn a_plain_client_may_name_itself_in_the_url() {
    let server = TestServer::start();
    let mut json_client = server.chat();
    let mut tutorial = plain(&server, "?name=Ada%20L");
    assert_eq!(json_client.recv_type("join")["name"], "Ada L");
    tutorial.send(Message::text("named")).unwrap();
    assert_eq!(json_client.recv_type("message")["name"], "Ada L");
    // A name the rules refuse leaves the guest name, with an error line.
    let mut bad = plain(&server, "?name=%07bell");
    assert!(read_text(&mut bad).starts_with("error: "), "an error line for a refused name");
    assert!(json_client.recv_type("join")["name"].as_str().unwrap().starts_with("guest-"));
}

#[test]
fn bad_plain_input_gets_an_error_line_and_floods_are_cut() {
    let server = TestServer::with(|c| c.message_rate = 2.0);
    let mut tutorial = plain(&server, "");
    tutorial.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(read_text(&mut tutorial), "error: binary frames are not supported; send text");
    tutorial.send(Message::text("bell\u{7}")).unwrap();
    let error = read_text(&mut tutorial);
    assert!(error.starts_with("error: ") && error.contains("control"), "{error}");
    // Over the message rate: error lines, then 1008 (the JSON endpoint's rule).
    for i in 0..20 {
        if tutorial.send(Message::text(format!("flood {i}"))).is_err() {
            break;
        }
    }
    let mut saw_rate_error = false;
    let close = loop {
        match tutorial.read() {
            Ok(Message::Text(t)) => saw_rate_error |= t.as_str().starts_with("error: rate limit"),
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(e) => panic!("expected a Close, got {e}"),
        }
    };
    assert!(saw_rate_error, "refusals are explained before the close");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1008));
    // Another address's plain client is still served, at its own rate.
    let other = tcp_from(other_ip(), server.ws).expect("connect from another address");
    let (mut innocent, _) = tungstenite::client::client(format!("ws://{}/", server.ws), other).expect("upgrade");
    innocent.send(Message::text("still here")).unwrap();
    // (The flood's last accepted lines may still be on their way to it first.)
    while read_text(&mut innocent) != "still here" {}
}

#[test]
fn the_plain_endpoint_answers_on_the_http_port_too_and_other_paths_stay_404() {
    let server = TestServer::start();
    let mut on_http = connect_raw(&format!("ws://{}/", server.http)).expect("plain upgrade on the HTTP port");
    on_http.send(Message::text("via the page's port")).unwrap();
    assert_eq!(read_text(&mut on_http), "via the page's port");
    assert_eq!(refused_status(connect_raw(&format!("ws://{}/nope", server.ws))), 404);
}

#[test]
fn a_plain_client_cannot_take_a_signed_in_users_name() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "a-shared-token-for-guests";
    let server = TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.token = Some(TOKEN.into());
    });
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let ada = jwt(SECRET, serde_json::json!({"sub": "u-ada", "name": "ada", "exp": exp}));
    let mut signed_in = connect_with(&server.chat_url(), &[("Authorization", &format!("Bearer {ada}"))]).unwrap();
    read_json(&mut signed_in); // welcome: "ada" is reserved for u-ada from now on
    read_json(&mut signed_in); // presence

    let mut impostor = connect_raw(&format!("ws://{}/?token={TOKEN}&name=ada", server.ws)).unwrap();
    assert_eq!(read_text(&mut impostor), "error: that name belongs to someone else; choose another");
    impostor.send(Message::text("who am I?")).unwrap();
    let m = loop {
        let v = read_json(&mut signed_in);
        if v["type"] == "message" {
            break v;
        }
    };
    assert!(m["name"].as_str().unwrap().starts_with("guest-"), "posted as a guest, not as ada: {m}");
}
