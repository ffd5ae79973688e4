//! Close codes and limits: every bad input gets its documented status or close code, and
//! the server keeps serving everyone else.

use std::io::Write;
use std::net::TcpStream;

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

/// A masked client frame with a payload under 126 bytes.
fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![first_byte, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn close_code_after_raw(url: &str, raw: &[u8]) -> CloseCode {
    let mut ws = connect_raw(url).unwrap();
    ws.get_mut().write_all(raw).unwrap();
    expect_close(&mut ws).expect("a close frame with a code").code
}

#[test]
fn oversized_message_closes_with_1009() {
    let server = TestServer::with(|c| c.max_message_bytes = 1024);
    for url in [server.chat_url(), server.echo_url()] {
        let mut ws = connect_raw(&url).unwrap();
        ws.send(Message::text("z".repeat(1025))).unwrap();
        assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Size, "{url}");
    }
    // Exactly at the cap is fine.
    let mut ws = connect_raw(&server.echo_url()).unwrap();
    ws.send(Message::text("z".repeat(1024))).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("z".repeat(1024)));
}

#[test]
fn fragments_adding_up_past_the_cap_close_with_1009() {
    let server = TestServer::with(|c| c.max_message_bytes = 1024);
    let mut raw = masked_frame(0x01, &[b'a'; 100]); // text, not final
    for _ in 0..20 {
        raw.extend(masked_frame(0x00, &[b'a'; 100])); // continuation, not final
    }
    assert_eq!(close_code_after_raw(&server.echo_url(), &raw), CloseCode::Size);
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start();
    for url in [server.chat_url(), server.echo_url()] {
        let raw = masked_frame(0x81, &[b'o', b'k', 0xff, 0xfe]);
        assert_eq!(close_code_after_raw(&url, &raw), CloseCode::Invalid, "{url}");
    }
}

#[test]
fn protocol_violations_close_with_1002() {
    let server = TestServer::start();
    let unmasked = vec![0x81, 0x02, b'h', b'i'];
    let reserved_opcode = masked_frame(0x83, b"x");
    let rsv_bits = masked_frame(0xC1, b"x");
    let stray_continuation = masked_frame(0x80, b"x");
    for (what, raw) in [
        ("unmasked", unmasked),
        ("reserved opcode", reserved_opcode),
        ("rsv bits", rsv_bits),
        ("continuation without start", stray_continuation),
    ] {
        assert_eq!(close_code_after_raw(&server.chat_url(), &raw), CloseCode::Protocol, "{what}");
    }
    // The server is still fine.
    let mut c = server.chat();
    c.say("ok");
    c.recv_type("message");
}

#[test]
fn unknown_path_is_404_before_the_upgrade() {
    let server = TestServer::start();
    match connect_raw(&format!("ws://{}/nope", server.ws)) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("/ws"), "body names the right paths: {body}");
        }
        other => panic!("expected 404, got {other:?}"),
    }
}

#[test]
fn over_max_clients_gets_503_before_the_upgrade() {
    let server = TestServer::with(|c| c.max_clients = 2);
    let a = server.chat();
    let _b = server.chat();
    match connect_raw(&server.chat_url()) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    drop(a);
    wait_until("a's thread exited", || server.live_clients() == 1);
    let _c = server.chat();
}

#[test]
fn a_client_that_never_reads_is_closed_with_1008_and_the_others_keep_receiving() {
    // Enough to fill the kernel buffers (the server's send buffer autotunes up to 4 MiB
    // here) and then the 256 KiB outbox cap.
    const MESSAGES: usize = 2000;
    let server = TestServer::with(|c| c.max_queued_bytes = 256 * 1024);

    // The slow client: a tiny receive buffer, and it does not read until the end.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.ws.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut slow, _) = tungstenite::client::client(server.chat_url(), stream).unwrap();
    let slow_id = match slow.read().unwrap() {
        Message::Text(t) => serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap()["id"].as_u64().unwrap(),
        other => panic!("expected welcome, got {other:?}"),
    };

    let mut fast = server.chat();
    let url = server.chat_url();
    let sender = std::thread::spawn(move || {
        let mut s = Client::connect(&url);
        let text = "x".repeat(3900); // just under MAX_TEXT_CHARS with the prefix
        // Send in batches and read our own broadcasts back, so that this client does not
        // become a slow consumer itself.
        for batch in 0..MESSAGES / 50 {
            for i in 0..50 {
                s.say(&format!("{} {text}", batch * 50 + i));
            }
            let mut got = 0;
            while got < 50 {
                if s.recv()["type"] == "message" {
                    got += 1;
                }
            }
        }
    });

    let mut seqs = vec![];
    let mut saw_leave = false;
    while seqs.len() < MESSAGES {
        let v = fast.recv();
        match v["type"].as_str() {
            Some("message") => seqs.push(v["seq"].as_u64().unwrap()),
            Some("leave") if v["id"] == slow_id => saw_leave = true,
            _ => {}
        }
    }
    sender.join().unwrap();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the fast client got every message, in order");
    if !saw_leave {
        assert_eq!(fast.recv_type("leave")["id"], slow_id);
    }

    // Now read the slow socket: what was queued, then Close 1008.
    let mut received = 0;
    let frame = loop {
        match slow.read().expect("slow client reads its backlog within the timeout") {
            Message::Text(_) => received += 1,
            Message::Close(frame) => break frame,
            _ => {}
        }
    };
    assert_eq!(frame.expect("a close code").code, CloseCode::Policy);
    assert!(received < MESSAGES, "the slow client was cut off (got {received})");
}
