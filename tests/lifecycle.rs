//! Heartbeat reaping and graceful shutdown.

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

#[test]
fn heartbeat_terminates_a_client_that_does_not_answer_pings() {
    let server = TestServer::with(|c| c.ping_interval = Duration::from_secs(1));
    let mut alive = server.chat();
    // A client that never reads never answers a ping (tungstenite replies while reading).
    let mut dead = connect_raw(&server.chat_url()).unwrap();
    let join = alive.recv_type("join");
    let joined = std::time::Instant::now();
    // The live client keeps answering across several rounds while the dead one is reaped:
    // one round marks it and pings, the next cuts it — between one and two rounds (1 s
    // each here) after it arrived, plus a margin for a loaded machine.
    let leave = alive.recv_type("leave");
    let took = joined.elapsed();
    assert_eq!(leave["id"], join["id"]);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(3500), "reaped after {took:?}");
    // Cut, not closed: what it finds when it finally reads is pings, then the end — no
    // Close frame (a dead peer would not read one).
    loop {
        match dead.read() {
            Ok(tungstenite::Message::Close(f)) => panic!("a dead peer was sent a Close: {f:?}"),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                panic!("the dead peer's socket was never cut")
            }
            Err(_) => break,
        }
    }
    wait_until("dead client's thread gone", || server.live_clients() == 1);
    alive.say("still connected");
    assert_eq!(alive.recv_type("message")["text"], "still connected");
    drop(dead);
}

#[test]
fn shutdown_sends_1001_and_waits_for_clients() {
    let mut server = TestServer::start();
    let mut a = server.chat();
    let mut b = server.chat();
    let ws_addr = server.ws;
    let handle = server.handle.take().unwrap();
    let stopper = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        handle.shutdown();
        start.elapsed()
    });
    for c in [&mut a, &mut b] {
        let frame = c.expect_close().expect("a close code");
        assert_eq!(frame.code, CloseCode::Away);
        let _ = c.ws.flush(); // sends tungstenite's Close reply
    }
    let took = stopper.join().unwrap();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?} although clients answered");
    // No listener is left: the accept loop has exited and the socket is closed.
    assert!(TcpStream::connect_timeout(&ws_addr, Duration::from_secs(1)).is_err());
}

#[test]
fn shutdown_does_not_wait_forever_for_silent_clients() {
    let mut server = TestServer::start();
    // In the hub (its welcome arrived), then never reads or answers again.
    let _silent = server.chat();
    let took = server.shutdown();
    // Documented: 3 s for clients to answer the 1001 and drain, then the rest are cut (the
    // cut itself waits at most 2 s more). Waiting less would cut well-behaved clients short.
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn sigterm_and_sigint_close_clients_with_1001_and_exit_0() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut server = BinaryServer::start(&[]);
        let mut c = Client::connect(&server.chat_url());
        server.signal(sig);
        assert_eq!(c.expect_close().expect("a close code").code, CloseCode::Away);
        let _ = c.ws.flush();
        let status = server.wait_exit(Duration::from_secs(8));
        assert!(status.success(), "exit status {status:?} after signal {sig}");
    }
}

#[test]
fn a_client_that_ignores_the_servers_close_is_cut_after_5_seconds() {
    let server = TestServer::start();
    // A client that stops reading, with a tiny receive window.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.ws.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut stalled, _) = tungstenite::client::client(server.chat_url(), stream).unwrap();
    let welcome = read_json(&mut stalled);
    let mut sender = server.chat();
    // Flood until the server closes the stalled client as a slow consumer: the sender sees
    // its `leave` at that moment.
    let text = "s".repeat(3900);
    let mut sent = 0;
    let closed_at = loop {
        sent += 1;
        assert!(sent < 5000, "the stalled client was never closed");
        sender.send_json(serde_json::json!({"type": "message", "text": text}));
        let v = sender.recv();
        if v["type"] == "leave" && v["id"] == welcome["id"] {
            break std::time::Instant::now();
        }
    };
    // It never answers the Close: its thread ends when the heartbeat cuts it (CLOSE_TIMEOUT).
    let cut = || metric(server.http, "threadchat_disconnects_total{reason=\"slow_consumer\"}") == 1;
    while !cut() {
        assert!(closed_at.elapsed() < Duration::from_secs(8), "never cut");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = closed_at.elapsed();
    assert!(took >= Duration::from_millis(4500), "cut after {took:?}, before its 5 s to answer");
    drop(stalled);
}

/// What a connection meets once shutdown has begun (the flag `ServerHandle::shutdown` sets
/// first). Set here by hand, so that the window between the flag and the listeners closing
/// — milliseconds in a real shutdown — can be held open and every path through it checked.
#[test]
fn once_shutdown_begins_upgrades_and_readyz_get_503_and_newcomers_are_closed_at_accept() {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let server = TestServer::start();
    let shared = server.handle.as_ref().unwrap().shared();
    // Two connections accepted before shutdown, each halfway through its request head.
    let mut upgrade = tcp(server.http);
    let mut ready = tcp(server.ws);
    for s in [&mut upgrade, &mut ready] {
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
    }
    upgrade.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    ready.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n").unwrap();
    wait_until("both connections admitted", || shared.admission.pending() == 2);

    shared.shutting_down.store(true, Ordering::Release);

    upgrade
        .write_all(
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    let mut raw = vec![];
    upgrade.read_to_end(&mut raw).expect("the refusal, then the end (not a hang)");
    let refused = parse_response(&raw);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("shutting down"), "{}", refused.text());

    ready.write_all(b"\r\n").unwrap();
    let mut raw = vec![];
    ready.read_to_end(&mut raw).expect("the answer, then the end: no keep-alive while stopping");
    let readyz = parse_response(&raw);
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert!(readyz.text().contains("shutting down"), "{}", readyz.text());

    // A newcomer on either port is closed at accept, unanswered.
    for addr in [server.http, server.ws] {
        let mut late = tcp(addr);
        late.set_read_timeout(Some(WAIT)).unwrap();
        let _ = late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut raw = vec![];
        match late.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a late connection was left open ({e})"),
        }
        assert!(raw.is_empty(), "a late connection was answered: {}", String::from_utf8_lossy(&raw));
    }
}
