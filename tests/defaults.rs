//! The binary exactly as `cargo run` starts it — no flag but free ports and a temporary
//! data directory — and each default limit of docs/security.md, at its documented figure.
//! Other modules lift limits to test something else; these tests are what a user gets.

use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

/// Upgrades from `local` until one is refused with a status; returns the sessions opened
/// before it and that status. Gives up after `max` attempts.
fn upgrade_until_refused(
    url: &str,
    local: IpAddr,
    max: usize,
) -> (Vec<tungstenite::WebSocket<TcpStream>>, Option<u16>) {
    let mut open = vec![];
    for _ in 0..max {
        match connect_from(Some(local), url, &[]) {
            Ok(ws) => open.push(ws),
            Err(tungstenite::Error::Http(resp)) => return (open, Some(resp.status().as_u16())),
            Err(e) => panic!("neither a session nor a status: {e}"),
        }
    }
    (open, None)
}

#[test]
fn the_upgrade_rate_is_10_a_second_in_bursts_of_20() {
    let server = BinaryServer::start_defaults(&[]);
    let started = Instant::now();
    let (open, status) = upgrade_until_refused(&server.chat_url(), [127, 0, 10, 1].into(), 40);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(status, Some(429));
    // 20 at once, plus what refilled at 10/s while they connected.
    let allowed = 20.0 + (elapsed * 10.0).ceil();
    assert!(open.len() >= 20 && open.len() as f64 <= allowed, "{} upgrades in {elapsed:.2} s", open.len());
}

#[test]
fn the_65th_session_from_one_address_gets_503() {
    let server = BinaryServer::start_defaults(&[]);
    let local: IpAddr = [127, 0, 10, 2].into();
    let mut open = vec![];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no 503 after {} sessions", open.len());
        match connect_from(Some(local), &server.chat_url(), &[]) {
            Ok(ws) => open.push(ws),
            // The upgrade rate (10/s) paces us; wait for its next token.
            Err(tungstenite::Error::Http(resp)) if resp.status() == 429 => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(open.len(), 64);
    // Another address is not affected.
    connect_from(Some([127, 0, 10, 3].into()), &server.chat_url(), &[]).expect("another address");
}

#[test]
fn the_17th_unfinished_connection_from_one_address_is_closed_at_accept() {
    let server = BinaryServer::start_defaults(&[]);
    let local: IpAddr = [127, 0, 10, 4].into();
    let mut silent: Vec<TcpStream> = (0..16).map(|_| tcp_from(local, server.http).unwrap()).collect();
    // The kernel hands a silent socket over after a second (TCP_DEFER_ACCEPT, see
    // `accept::tune_listener`); from then on each holds a thread and counts toward the cap.
    let handshaking = || metric(server.http, "threadchat_clients{endpoint=\"handshake\"}");
    wait_until("the 16 silent sockets are accepted", || handshaking() >= 16);
    // Each is answered once it speaks: they all got a thread.
    let mut extra = tcp_from(local, server.http).unwrap();
    extra.set_read_timeout(Some(WAIT)).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut extra, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the 17th was closed without an answer: {}", String::from_utf8_lossy(&buf[..n]));
    silent[0].write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut silent[0], &mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    let r = http_request_from(Some(other_ip()), server.http, "GET", "/healthz", &[], "");
    assert_eq!(r.status, 200);
}

#[test]
fn chat_messages_are_limited_to_20_a_second_in_bursts_of_40_and_64_kib() {
    let server = BinaryServer::start_defaults(&[]);
    let mut c = Client::connect(&server.chat_url());
    let started = Instant::now();
    for i in 0..60 {
        c.ws.write(Message::text(json!({"type": "message", "text": format!("m{i}")}).to_string())).unwrap();
    }
    c.ws.flush().unwrap();
    let (mut stored, mut limited) = (0, 0);
    while stored + limited < 60 {
        let v = c.recv();
        match v["type"].as_str() {
            Some("message") => stored += 1,
            Some("error") if v["error"].as_str().unwrap_or("").starts_with("rate limit") => limited += 1,
            _ => {}
        }
    }
    let allowed = 40.0 + (started.elapsed().as_secs_f64() * 20.0).ceil();
    assert!(limited > 0 && stored >= 40 && stored as f64 <= allowed, "{stored} stored, {limited} limited");
    // 64 KiB is the largest message; one byte more is 1009.
    let mut big = Client::connect(&server.chat_url());
    big.ws.send(Message::text("x".repeat(64 * 1024 + 1))).unwrap();
    assert_eq!(big.expect_close().map(|f| f.code), Some(CloseCode::Size));
}

#[test]
fn one_address_sends_at_most_100_chat_messages_a_second_in_bursts_of_200() {
    // Twelve clients of one address, each within its own burst of 40, together well past
    // the address's 200: without a per-address budget all 468 would be stored.
    let server = BinaryServer::start_defaults(&[]);
    let mut senders: Vec<Client> = (0..12).map(|_| Client::connect(&server.chat_url())).collect();
    let started = Instant::now();
    for (i, c) in senders.iter_mut().enumerate() {
        for k in 0..39 {
            c.ws.write(Message::text(json!({"type": "message", "text": format!("c{i}-{k}")}).to_string())).unwrap();
        }
        c.ws.flush().unwrap();
    }
    let (mut stored, mut limited) = (0, 0);
    for (i, c) in senders.iter_mut().enumerate() {
        // Each sender sees everyone's stored messages, and its own refusals only.
        let (mut own, mut refused) = (0, 0);
        while own + refused < 39 {
            let v = c.recv();
            match v["type"].as_str() {
                Some("message") if v["text"].as_str().is_some_and(|t| t.starts_with(&format!("c{i}-"))) => own += 1,
                Some("error") => {
                    let e = v["error"].as_str().unwrap_or("");
                    assert!(e.contains("from one address"), "only the address's budget refuses here: {v}");
                    refused += 1;
                }
                _ => {}
            }
        }
        stored += own;
        limited += refused;
    }
    let allowed = 200.0 + (started.elapsed().as_secs_f64() * 100.0).ceil();
    assert!(stored >= 200 && stored as f64 <= allowed && limited > 0, "{stored} stored, {limited} limited");
    // Another address has its own budget: its message is stored at once.
    let mut neighbour = Client::connect_from(Some(other_ip()), &server.chat_url());
    neighbour.say("from next door");
    loop {
        let v = neighbour.recv();
        if v["type"] == "error" {
            panic!("the other address was refused: {v}");
        }
        if v["type"] == "message" && v["text"] == "from next door" {
            break;
        }
    }
}

#[test]
fn one_address_reads_at_most_4_mib_of_history_a_second_in_bursts_of_16() {
    // ~5 MiB of lobby history, written by an in-process server with the limits lifted;
    // then the binary, at its defaults, on the same data directory.
    let dir = TempDir::new();
    {
        let writer = TestServer::in_dir(&dir.0, |_| {});
        let mut c = Client::connect(&writer.chat_url());
        c.say_numbered(1200, &"h".repeat(3990));
    }
    let server = BinaryServer::start_defaults(&["--data-dir", dir.0.to_str().unwrap()]);
    let get = |local: IpAddr, after: u64| {
        http_request_from(
            Some(local),
            server.http,
            "GET",
            &format!("/api/rooms/lobby/messages?after={after}&limit=1000"),
            &[],
            "",
        )
    };
    // Page through it from one address, from the start again at the end, until refused.
    let local: IpAddr = [127, 0, 0, 1].into();
    let (started, mut after, mut served) = (Instant::now(), 0u64, 0usize);
    // The budget refills while we read: bound what it may have refilled from both sides
    // (after the first page, before the last request; from before the first request, after
    // the refusal), so the bounds hold however fast this build serves pages.
    let mut first_done = None;
    let mut last_asked;
    let refusal = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "{served} bytes served in a minute, never refused");
        last_asked = Instant::now();
        let r = get(local, after);
        if r.status != 200 {
            break r;
        }
        first_done.get_or_insert_with(Instant::now);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let messages = v["messages"].as_array().unwrap();
        after = messages.last().map_or(0, |m| m["seq"].as_u64().unwrap());
        served += r.body.len();
    };
    const MIB: f64 = 1024.0 * 1024.0;
    let refilled_at_least = 4.0 * MIB * last_asked.saturating_duration_since(first_done.unwrap()).as_secs_f64();
    let refilled_at_most = 4.0 * MIB * started.elapsed().as_secs_f64();
    // The burst and the refill; at most one page more (the one that overdrew it); the
    // bodies are a little smaller than what the budget counts per message.
    let (least, most) = (0.97 * (16.0 * MIB + refilled_at_least), 16.0 * MIB + refilled_at_most + 1.1 * MIB);
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    assert!(refusal.text().contains("4 MiB of history per second"), "{}", refusal.text());
    let retry: u64 = refusal.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    let served = served as f64;
    assert!(least <= served && served < most, "{served} bytes served before the 429, expected {least}..{most}");
    // Another address has its own budget.
    assert_eq!(get(other_ip(), 0).status, 200);
}

#[test]
fn pings_are_answered_up_to_20_a_second_in_bursts_of_40_and_a_ping_flood_is_closed() {
    // Each ping costs the server a pong; before this limit one client pipelining empty
    // pings kept a core busy.
    let server = BinaryServer::start_defaults(&[]);
    let mut c = Client::connect(&server.chat_url());
    for _ in 0..30 {
        c.ws.write(Message::Ping(Vec::new().into())).unwrap();
    }
    c.say("after the pings");
    let mut pongs = 0;
    loop {
        match c.ws.read().expect("still open after 30 pings") {
            Message::Pong(_) => pongs += 1,
            Message::Text(t) if t.contains("after the pings") => break,
            _ => {}
        }
    }
    assert_eq!(pongs, 30);
    // A flood: closed with 1008, its pings no longer answered; a neighbour goes on.
    let mut flooder = Client::connect(&server.chat_url());
    for _ in 0..500 {
        if flooder.ws.write(Message::Ping(Vec::new().into())).is_err() {
            break;
        }
    }
    let _ = flooder.ws.flush();
    let close = flooder.expect_close().expect("a Close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("ping flood"), "{close:?}");
    let mut neighbour = Client::connect_from(Some(other_ip()), &server.chat_url());
    neighbour.say("still here");
    while neighbour.recv_type("message")["text"] != "still here" {}
}

#[test]
fn echo_spends_the_same_message_budget_and_a_flood_is_closed() {
    // `/echo` is as public as `/ws`: 40 at once are echoed, then 1008.
    let server = BinaryServer::start_defaults(&[]);
    let url = format!("ws://{}/echo", server.ws);
    let mut ws = connect_raw(&url).expect("upgrade");
    for i in 0..60 {
        if ws.write(Message::text(format!("e{i}"))).is_err() {
            break;
        }
    }
    let _ = ws.flush();
    let mut echoed = 0;
    let close = loop {
        match ws.read() {
            Ok(Message::Text(_)) => echoed += 1,
            Ok(Message::Close(frame)) => break frame.expect("a close code"),
            Ok(_) => {}
            Err(e) => panic!("no Close frame after {echoed} echoes: {e}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("echo flood"), "{close:?}");
    assert!((40..60).contains(&echoed), "{echoed} echoed");
    // Another address is still echoed.
    let mut neighbour = connect_from(Some(other_ip()), &url, &[]).expect("upgrade from 127.0.0.2");
    neighbour.send(Message::text("next door")).unwrap();
    assert_eq!(neighbour.read().unwrap(), Message::text("next door"));
}

#[test]
fn a_connection_is_in_at_most_32_rooms_and_foreign_origins_get_403() {
    let server = BinaryServer::start_defaults(&[]);
    let mut c = Client::connect(&server.chat_url());
    for i in 0..32 {
        c.send_json(json!({"type": "join", "room": format!("d{i}")}));
    }
    let (mut joined, mut refused) = (0, vec![]);
    while joined + refused.len() < 32 {
        let v = c.recv();
        match v["type"].as_str() {
            Some("presence") => joined += 1,
            Some("error") => refused.push(v["error"].to_string()),
            _ => {}
        }
    }
    assert_eq!(joined, 31, "the lobby and 31 more");
    assert!(refused[0].contains("32 rooms already"), "{refused:?}");
    let origin = refused_status(connect_with(&server.chat_url(), &[("Origin", "https://evil.example")]));
    assert_eq!(origin, 403);
    let own = format!("http://127.0.0.1:{}", server.http.port());
    connect_with(&server.chat_url(), &[("Origin", own.as_str())]).expect("the page's own origin");
}

#[test]
fn api_posts_are_limited_to_20_a_second_per_address() {
    let server = BinaryServer::start_defaults(&[]);
    let local: IpAddr = [127, 0, 10, 5].into();
    // Twelve at a time (under the 16 requests in progress one address may have), so the 60
    // take a few round trips, not 60 durable commits in a row, however slow the disk.
    let started = Instant::now();
    let http = server.http;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..12)
            .map(|w| {
                s.spawn(move || {
                    (0..5)
                        .map(|i| {
                            let body = json!({"text": format!("p{w}-{i}")}).to_string();
                            let path = "/api/rooms/lobby/messages";
                            http_request_from(
                                Some(local),
                                http,
                                "POST",
                                path,
                                &["Content-Type: application/json"],
                                &body,
                            )
                            .status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let created = statuses.iter().filter(|&&s| s == 201).count();
    let allowed = 40.0 + (started.elapsed().as_secs_f64() * 20.0).ceil();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(created >= 40 && created as f64 <= allowed, "{created} created in {:?}", started.elapsed());
}

#[test]
fn an_unfinished_request_is_answered_408_after_10_seconds() {
    let server = BinaryServer::start_defaults(&[]);
    let mut s = tcp(server.http);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    let took = started.elapsed();
    assert!(answer.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    assert!(took >= Duration::from_millis(9500) && took < Duration::from_secs(13), "{took:?}");
}
