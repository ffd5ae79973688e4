//! Admission control at the upgrade and rate limits: every refusal is a real HTTP status
//! before the 101, and a normal client is still served afterwards.

use std::time::Duration;

use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

#[test]
fn foreign_origins_get_403_own_and_listed_ones_pass() {
    let server = TestServer::with(|c| c.allow_origins = vec!["https://chat.example.org".into()]);
    let own = format!("http://127.0.0.1:{}", server.http.port());
    let url = server.chat_url();
    for origin in [
        "https://evil.example".to_string(),
        format!("{own}.evil.example"), // substring tricks
        format!("{own}/"),
        format!(
            "http://127.0.0.1:{}",
            (1..).map(|d| server.http.port().wrapping_add(d)).find(|p| *p != server.ws.port()).unwrap()
        ),
        "null".to_string(),
        "https://chat.example.org.evil".to_string(),
    ] {
        assert_eq!(refused_status(connect_with(&url, &[("Origin", &origin)])), 403, "{origin}");
    }
    for origin in [own, format!("http://localhost:{}", server.http.port()), "https://chat.example.org".into()] {
        let mut ws = connect_with(&url, &[("Origin", &origin)]).unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(read_json(&mut ws)["type"], "welcome");
    }
    // No Origin at all: a command-line client, allowed.
    server.chat();
}

#[test]
fn a_token_is_required_when_configured() {
    const TOKEN: &str = "correct-horse-battery-staple";
    let server = TestServer::with(|c| c.token = Some(TOKEN.into()));
    for url in [server.chat_url(), server.echo_url()] {
        assert_eq!(refused_status(connect_raw(&url)), 401, "{url}: none");
        assert_eq!(refused_status(connect_raw(&format!("{url}?token=wrong-token-wrong-token"))), 401);
        assert_eq!(refused_status(connect_with(&url, &[("Authorization", "Bearer nope")])), 401);
        assert_eq!(refused_status(connect_with(&url, &[("Cookie", "threadchat_token=nope")])), 401);
    }
    let url = server.chat_url();
    for ws in [
        connect_raw(&format!("{url}?token={TOKEN}")),
        connect_with(&url, &[("Authorization", &format!("Bearer {TOKEN}"))]),
        connect_with(&url, &[("Cookie", &format!("theme=dark; threadchat_token={TOKEN}"))]),
    ] {
        let mut ws = ws.expect("right token accepted");
        assert_eq!(read_json(&mut ws)["type"], "welcome");
    }
}

#[test]
fn too_many_connections_from_one_address_get_503() {
    let server = TestServer::with(|c| c.max_clients_per_ip = 2);
    let a = server.chat();
    let _b = server.chat();
    assert_eq!(refused_status(connect_raw(&server.chat_url())), 503);
    drop(a);
    wait_until("a's slot released", || server.live_clients() == 1);
    server.chat();
}

#[test]
fn an_ipv6_client_counts_as_its_64_however_many_addresses_it_uses() {
    // Through a trusted proxy, so the test can be any IPv6 client on an IPv4 loopback.
    let server = TestServer::with(|c| {
        c.max_clients_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let from = |client: &str| connect_with(&server.chat_url(), &[("X-Forwarded-For", client)]);
    let _a = from("2001:db8:1:2::1").unwrap();
    let _b = from("2001:db8:1:2:ffff::2").unwrap();
    // A third address of the same /64 is the same subscriber: over its two sessions.
    assert_eq!(refused_status(from("2001:db8:1:2:abcd:ef01:2345:6789")), 503);
    // The next /64 is someone else.
    from("2001:db8:1:3::1").expect("another /64 has its own sessions");
}

#[test]
fn behind_a_trusted_proxy_limits_and_tickets_apply_to_the_forwarded_client() {
    let server = TestServer::with(|c| {
        c.max_clients_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.token = Some("a-long-enough-shared-token".into());
    });
    let auth = ("Authorization", "Bearer a-long-enough-shared-token");
    // Two clients behind the proxy (our address is the trusted one): one slot each.
    let first = connect_with(&server.chat_url(), &[auth, ("X-Forwarded-For", "203.0.113.1")]).unwrap();
    let _second = connect_with(&server.chat_url(), &[auth, ("X-Forwarded-For", "203.0.113.2")]).unwrap();
    let again = connect_with(&server.chat_url(), &[auth, ("X-Forwarded-For", "203.0.113.1")]);
    assert_eq!(refused_status(again), 503, "the per-IP cap counts the forwarded address");
    drop(first);
    wait_until("its slot is released", || {
        connect_with(&server.chat_url(), &[auth, ("X-Forwarded-For", "203.0.113.1")]).is_ok()
    });
    // A ticket bought through the proxy by one client is bound to that client.
    let bought = http_request(
        server.http,
        "POST",
        "/api/ticket",
        &["Authorization: Bearer a-long-enough-shared-token", "X-Forwarded-For: 203.0.113.9", "Content-Length: 0"],
    );
    let ticket: serde_json::Value = serde_json::from_slice(&bought.body).unwrap();
    let url = format!("{}?ticket={}", server.chat_url(), ticket["ticket"].as_str().unwrap());
    let stolen = connect_with(&url, &[("X-Forwarded-For", "203.0.113.10")]);
    assert_eq!(refused_status(stolen), 401, "another client behind the proxy cannot use it");
}

#[test]
fn upgrade_floods_get_429() {
    // Bursts of 1, one token per 2 s: slow enough that no token refills while the test
    // runs on a loaded machine, so the refusal cannot be missed.
    let server = TestServer::with(|c| c.upgrade_rate = 0.5);
    let _a = server.chat();
    assert_eq!(refused_status(connect_raw(&server.chat_url())), 429);
    // The bucket refills: 2 s later one more gets in (waiting on time itself, not on a
    // condition to poll).
    std::thread::sleep(Duration::from_millis(2100));
    server.chat();
}

#[test]
fn message_floods_are_refused_then_closed_with_1008() {
    // Bursts of 2, a token a second, the three messages sent back to back: no token can
    // refill between them however loaded the machine (the defaults, 20/s in bursts of 40,
    // are checked in tests/defaults.rs).
    let server = TestServer::with(|c| c.message_rate = 1.0);
    let mut bystander = server.chat();
    let mut flooder = server.chat();
    bystander.recv_type("join");
    for text in ["ok 1", "ok 2", "one too many"] {
        flooder.say(text);
    }
    // Past the burst: refused with an error (which may overtake the stored messages' echo:
    // it does not wait for the store), the connection stays open…
    let (mut echoed, mut error) = (0, None);
    while echoed < 2 || error.is_none() {
        let v = flooder.recv();
        match v["type"].as_str() {
            Some("message") => echoed += 1,
            Some("error") => error = Some(v),
            _ => {}
        }
    }
    let e = error.unwrap();
    assert!(e["error"].as_str().unwrap().contains("rate limit"), "{e}");
    // …and a client that keeps going is closed.
    for i in 0..30 {
        if flooder.ws.send(Message::text(json!({"type":"message","text":format!("flood {i}")}).to_string())).is_err() {
            break;
        }
    }
    assert_eq!(flooder.expect_close().unwrap().code, CloseCode::Policy);
    // Nobody else noticed anything but the leave.
    assert_eq!(bystander.recv_type("leave")["id"], flooder.id);
    bystander.say("still fine");
    assert_eq!(bystander.recv_type("message")["text"], "still fine");
    let text = http_get(server.http, "/metrics").text();
    assert!(text.contains("threadchat_disconnects_total{reason=\"rate_limit\"} 1"), "{text}");
}

fn ticket(server: &TestServer, auth: &[&str]) -> HttpResponse {
    http_request(server.http, "POST", "/api/ticket", &[&["Content-Length: 0"], auth].concat())
}

#[test]
fn one_time_tickets_stand_in_for_the_token() {
    const TOKEN: &str = "correct-horse-battery-staple";
    let server = TestServer::with(|c| c.token = Some(TOKEN.into()));
    let config: serde_json::Value = serde_json::from_slice(&http_get(server.http, "/api/config").body).unwrap();
    assert_eq!(config["auth"], "token");

    assert_eq!(ticket(&server, &[]).status, 401);
    assert_eq!(ticket(&server, &["Authorization: Bearer wrong-token-wrong-token"]).status, 401);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let r = ticket(&server, &[&bearer]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["expires_in"], 30);
    let t = v["ticket"].as_str().unwrap().to_string();
    assert_eq!(t.len(), 32, "128 random bits, hex");

    let url = format!("{}?ticket={t}", server.chat_url());
    let mut ws = connect_raw(&url).expect("a fresh ticket opens the socket");
    assert_eq!(read_json(&mut ws)["type"], "welcome");
    assert_eq!(refused_status(connect_raw(&url)), 401, "single use");
    assert_eq!(
        refused_status(connect_raw(&format!("{}?ticket=00112233445566778899aabbccddeeff", server.chat_url()))),
        401
    );

    // Bound to the address that asked for it: 127.0.0.2 cannot use 127.0.0.1's ticket.
    let cookie = format!("Cookie: threadchat_token={TOKEN}");
    let r = ticket(&server, &[&cookie]);
    let t: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    socket.connect_timeout(&server.ws.into(), WAIT).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("{}?ticket={}", server.chat_url(), t["ticket"].as_str().unwrap());
    match tungstenite::client::client(url, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401 from another address, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn tickets_are_not_offered_when_authentication_is_off() {
    let server = TestServer::start();
    assert_eq!(ticket(&server, &[]).status, 404);
    let config: serde_json::Value = serde_json::from_slice(&http_get(server.http, "/api/config").body).unwrap();
    assert!(config["auth"].is_null());
}

#[test]
fn jwts_name_the_user_who_cannot_rename() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let server = TestServer::with(|c| c.jwt_secret = Some(SECRET.into()));
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let ada = jwt(SECRET, json!({"sub": "u-ada", "name": "Ada", "exp": exp}));
    let expired = jwt(SECRET, json!({"sub": "u-ada", "name": "Ada", "exp": exp - 1200}));
    let forged = jwt("someone-elses-secret-0123456789ab", json!({"sub": "u-ada", "name": "Ada", "exp": exp}));

    assert_eq!(refused_status(connect_raw(&server.chat_url())), 401);
    assert_eq!(
        refused_status(connect_with(&server.chat_url(), &[("Authorization", &format!("Bearer {expired}"))])),
        401
    );
    assert_eq!(
        refused_status(connect_with(&server.chat_url(), &[("Authorization", &format!("Bearer {forged}"))])),
        401
    );

    let mut tab1 = connect_with(&server.chat_url(), &[("Authorization", &format!("Bearer {ada}"))]).unwrap();
    let welcome = read_json(&mut tab1);
    assert_eq!(welcome["name"], "Ada");
    read_json(&mut tab1); // presence
    tab1.send(Message::text(json!({"type": "name", "name": "Eve"}).to_string())).unwrap();
    let e = read_json(&mut tab1);
    assert!(e["error"].as_str().unwrap().contains("cannot be changed"), "{e}");

    // A second tab through a ticket bought with the same JWT: same name, shown once.
    let r = http_request(
        server.http,
        "POST",
        "/api/ticket",
        &["Content-Length: 0", &format!("Authorization: Bearer {ada}")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let t: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut tab2 = connect_raw(&format!("{}?ticket={}", server.chat_url(), t["ticket"].as_str().unwrap())).unwrap();
    assert_eq!(read_json(&mut tab2)["name"], "Ada");
    let presence = read_json(&mut tab2);
    assert_eq!((presence["count"].as_u64(), presence["members"].as_array().unwrap().len()), (Some(1), 1), "{presence}");
}

#[test]
fn a_connection_is_closed_when_its_jwt_expires_and_resumes_with_a_new_one_without_loss() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let server = TestServer::with(|c| c.jwt_secret = Some(SECRET.into()));
    let now = threadchat::clock::now_ms() / 1000;
    // `exp` 57 s ago: still valid for the 60 s leeway, so about 3 s to live.
    let short = jwt(SECRET, json!({"sub": "u-ada", "name": "Ada", "exp": now - 57}));
    let fresh = jwt(SECRET, json!({"sub": "u-ada", "name": "Ada", "exp": now + 600}));
    let bob = jwt(SECRET, json!({"sub": "u-bob", "name": "bob", "exp": now + 600}));
    let bearer = |t: &str| format!("Bearer {t}");

    let mut ada = connect_with(&server.chat_url(), &[("Authorization", &bearer(&short))]).unwrap();
    assert_eq!(read_json(&mut ada)["name"], "Ada");
    let presence = read_json(&mut ada);
    let mut last_seq = presence["seq"].as_u64().unwrap();
    let mut seen: Vec<String> = vec![];
    let mut other = connect_with(&server.chat_url(), &[("Authorization", &bearer(&bob))]).unwrap();
    read_json(&mut other);
    read_json(&mut other);

    // bob talks while Ada's token runs out; Ada reads until her connection is closed.
    let started = std::time::Instant::now();
    let mut sent = 0;
    let close = loop {
        if sent < 3 {
            sent += 1;
            other.send(Message::text(json!({"type": "message", "text": format!("m{sent}")}).to_string())).unwrap();
        }
        match ada.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "message" {
                    last_seq = v["seq"].as_u64().unwrap();
                    seen.push(v["text"].as_str().unwrap().to_string());
                }
            }
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => {}
            Err(e) => panic!("expected the 4001 close, got {e}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4001, "{close:?}");
    assert!(close.reason.contains("token expired"), "{close:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "closed at the expiry, not later: {:?}", started.elapsed());
    // More is said while Ada is away.
    other.send(Message::text(json!({"type": "message", "text": "while away"}).to_string())).unwrap();

    // The expired token no longer opens anything; a fresh one resumes where she was.
    assert_eq!(
        refused_status(connect_with(&server.chat_url(), &[("Authorization", &bearer(&short))])),
        401,
        "the short token is past its leeway now"
    );
    let url = format!("{}?resume=lobby:{last_seq}", server.chat_url());
    let mut again = connect_with(&url, &[("Authorization", &bearer(&fresh))]).unwrap();
    let mut texts = vec![];
    while !texts.iter().any(|t| t == "while away") {
        let v = read_json(&mut again);
        if v["type"] == "message" {
            texts.push(v["text"].as_str().unwrap().to_string());
        }
    }
    // What she saw before the close, then the replay: every message once, in order.
    seen.extend(texts);
    assert_eq!(seen, ["m1", "m2", "m3", "while away"]);
}

#[test]
fn a_rooms_claim_and_private_rooms_decide_who_enters_reads_and_posts() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let server = TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.private_rooms = vec!["team-*".into(), "secret".into()];
    });
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let alice = jwt(SECRET, json!({"sub": "u-alice", "name": "alice", "exp": exp, "rooms": ["lobby", "team-a"]}));
    let bob = jwt(SECRET, json!({"sub": "u-bob", "name": "bob", "exp": exp}));
    let carol = jwt(SECRET, json!({"sub": "u-carol", "name": "carol", "exp": exp, "rooms": ["team-*"]}));
    let open = |token: &str, query: &str| {
        let url = format!("{}{query}", server.chat_url());
        let mut ws = connect_with(&url, &[("Authorization", &format!("Bearer {token}"))]).unwrap();
        assert_eq!(read_json(&mut ws)["type"], "welcome");
        ws
    };
    let send = |ws: &mut tungstenite::WebSocket<std::net::TcpStream>, v: serde_json::Value| {
        ws.send(Message::text(v.to_string())).unwrap()
    };
    const CLOSED: &str = "that room is not open to you";

    // alice: her claim opens the lobby and team-a, and nothing else — not even a public room.
    let mut a = open(&alice, "");
    assert_eq!(read_json(&mut a)["room"], "lobby");
    send(&mut a, json!({"type": "join", "room": "team-a"}));
    assert_eq!(read_json(&mut a)["type"], "presence");
    for room in ["team-b", "secret", "dev"] {
        send(&mut a, json!({"type": "join", "room": room}));
        assert_eq!(read_json(&mut a), json!({"type": "error", "error": CLOSED}), "{room}");
    }
    send(&mut a, json!({"type": "message", "room": "team-a", "text": "for the team"}));
    assert_eq!(read_json(&mut a)["text"], "for the team");

    // bob, without a claim: public rooms only. A refusal says nothing more (no presence,
    // no count), whether by join, resume or the URL.
    let mut b = open(&bob, "?resume=team-a:0");
    assert_eq!(read_json(&mut b)["room"], "lobby");
    assert_eq!(read_json(&mut b), json!({"type": "error", "error": CLOSED}));
    send(&mut b, json!({"type": "join", "room": "team-a"}));
    assert_eq!(read_json(&mut b), json!({"type": "error", "error": CLOSED}));
    send(&mut b, json!({"type": "resume", "room": "team-a", "after": 0}));
    assert_eq!(read_json(&mut b), json!({"type": "error", "error": CLOSED}));
    send(&mut b, json!({"type": "typing", "room": "team-a"}));
    assert!(read_json(&mut b)["error"].as_str().unwrap().contains("not in room"));
    send(&mut b, json!({"type": "join", "room": "dev"}));
    assert_eq!(read_json(&mut b)["room"], "dev");

    // carol's claim leaves out the lobby: she starts in no room and enters her team's.
    let mut c = open(&carol, "");
    send(&mut c, json!({"type": "join", "room": "team-z"}));
    let first = read_json(&mut c);
    assert_eq!((first["type"].as_str(), first["room"].as_str()), (Some("presence"), Some("team-z")), "no lobby first");

    // The HTTP API applies the same rule: history, posts, and the room listing.
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let get = |path: &str, t: &str| http_request(server.http, "GET", path, &[&bearer(t)]);
    assert_eq!(get("/api/rooms/team-a/messages", &alice).status, 200);
    for path in ["/api/rooms/team-a/messages", "/api/rooms/secret/messages", "/api/rooms/team-nobody/messages"] {
        let r = get(path, &bob);
        assert_eq!((r.status, r.text().contains(CLOSED)), (403, true), "{path}: {}", r.text());
    }
    let body = r#"{"text":"sneaking in"}"#;
    let post = |t: &str| {
        let headers = [bearer(t), "Content-Type: application/json".to_string()];
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        http_request_from(None, server.http, "POST", "/api/rooms/team-a/messages", &headers, body)
    };
    let refused = post(&bob);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(post(&alice).status, 201);
    // Nothing of bob's reached the room.
    let history: serde_json::Value = serde_json::from_slice(&get("/api/rooms/team-a/messages", &alice).body).unwrap();
    let texts: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["for the team", "sneaking in"], "alice's post, not bob's");
    let listed = |t: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&get("/api/rooms", t).body).unwrap();
        v["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_string()).collect()
    };
    assert!(listed(&alice).contains(&"team-a".to_string()));
    assert!(!listed(&bob).iter().any(|r| r.starts_with("team-")), "{:?}", listed(&bob));
    assert!(listed(&bob).contains(&"dev".to_string()));
    // `/metrics`, open to all, names no private room, nor counts its members (alice and
    // carol are in team-a and team-z); the public ones are there.
    let metrics = http_get(server.http, "/metrics").text();
    assert!(!metrics.contains("team-"), "{metrics}");
    assert!(metrics.contains("threadchat_room_members{room=\"dev\"} 1"), "{metrics}");

    // A claim the server cannot read refuses the token outright.
    for rooms in [json!(["Bad Room"]), json!("team-a"), json!([1])] {
        let bad = jwt(SECRET, json!({"sub": "u-mallory", "name": "mallory", "exp": exp, "rooms": rooms}));
        let status = refused_status(connect_with(&server.chat_url(), &[("Authorization", &format!("Bearer {bad}"))]));
        assert_eq!(status, 401, "{rooms}");
    }
}
