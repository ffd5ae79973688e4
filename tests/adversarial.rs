//! Hostile clients: each case checks the documented answer, that a normal client is still
//! served, and that nothing leaks.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn count_entries(dir: String) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_frame_claiming_2_pow_60_bytes_is_refused_with_1009_without_allocating() {
    // The real binary, so that its RSS is its own (not the test process's, shared by every
    // test running in parallel).
    let server = BinaryServer::start(&[]);
    let pid = server.child.id().to_string();
    let before = rss_kib(&pid);
    let mut ws = connect_raw(&format!("ws://{}/echo", server.ws)).unwrap();
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 60).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.get_mut().write_all(&frame).unwrap();
    assert_eq!(expect_close(&mut ws).unwrap().code, CloseCode::Size);
    assert!(rss_kib(&pid) < before + 50 * 1024, "memory grew by more than 50 MiB");
    Client::connect(&server.chat_url());
}

#[test]
fn a_ping_flood_from_a_client_that_does_not_read_is_bounded() {
    let server = TestServer::with(|c| {
        c.max_message_bytes = 1024;
        c.max_queued_bytes = 64 * 1024;
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.ws.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let (mut ws, _) = tungstenite::client::client(server.echo_url(), stream).unwrap();
    let mut bystander = server.chat();
    // 125-byte pings, as fast as the socket takes them, never reading a pong.
    for _ in 0..100_000 {
        if ws.write(Message::Ping(vec![7u8; 125].into())).is_err() || ws.flush().is_err() {
            break; // the server gave up on us
        }
    }
    // The server closed us as a slow consumer: pongs are bounded like everything else.
    let code = loop {
        match ws.read() {
            Ok(Message::Close(f)) => break f.map(|f| f.code),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                panic!("the server neither closed nor cut a client flooding pings")
            }
            Err(_) => break None, // cut after the close deadline, before we read the Close
        }
    };
    assert!(code.is_none() || code == Some(CloseCode::Policy), "{code:?}");
    // Either way, the server closed it as a slow consumer (1008), not for anything else.
    wait_until("counted as a slow consumer", || {
        metric(server.http, "threadchat_disconnects_total{reason=\"slow_consumer\"}") == 1
    });
    bystander.say("unaffected");
    assert_eq!(bystander.recv_type("message")["text"], "unaffected");
}

#[test]
fn a_reset_mid_frame_gives_one_leave_and_frees_the_connection() {
    let server = TestServer::start();
    let mut bystander = server.chat();
    let mut victim = connect_raw(&server.chat_url()).unwrap();
    let id = read_json(&mut victim)["id"].clone();
    assert_eq!(bystander.recv_type("join")["id"], id);
    // Half a masked text frame, then RST.
    victim.get_mut().write_all(&[0x81, 0x80 | 100, 1, 2, 3, 4, b'h', b'a']).unwrap();
    socket2::SockRef::from(victim.get_ref()).set_linger(Some(Duration::ZERO)).unwrap();
    drop(victim);
    assert_eq!(bystander.recv_type("leave")["id"], id);
    wait_until("victim's thread gone", || server.live_clients() == 1);
    bystander.say("after");
    let next = bystander.recv();
    assert_eq!(next["text"], "after", "exactly one leave, then our message: {next}");
}

#[test]
fn a_panic_in_one_client_thread_leaves_everyone_else_working() {
    let server = TestServer::with(|c| c.hooks.panic_on_text = Some("boom!".into()));
    let mut bystander = server.chat();
    let mut victim = server.chat();
    bystander.recv_type("join");
    victim.say("boom!");
    // The victim is told: 1011, internal error.
    assert_eq!(victim.expect_close().map(|f| f.code), Some(CloseCode::Error));
    assert_eq!(bystander.recv_type("leave")["id"], victim.id);
    wait_until("victim's thread gone", || server.live_clients() == 1);
    bystander.say("still here");
    assert_eq!(bystander.recv_type("message")["text"], "still here");
    let mut late = server.chat();
    late.say("new clients too");
    assert_eq!(late.recv_type("message")["text"], "new clients too");
}

#[test]
fn threads_and_fds_return_to_baseline_after_a_barrage_of_bad_connections() {
    let server = BinaryServer::start(&["--handshake-timeout-secs", "1"]);
    let pid = server.child.id().to_string();
    let mut client = Client::connect(&server.chat_url());
    let fds = || count_entries(format!("/proc/{pid}/fd"));
    let threads = || count_entries(format!("/proc/{pid}/task"));
    // Warm the pool of idle client threads up first, so it does not count as growth.
    let warm: Vec<_> = (0..70).map(|_| Client::connect(&server.chat_url())).collect();
    drop(warm);
    // Settled: only our client's thread serves a connection (and the metrics request's own).
    let serving = || metric(server.http, "threadchat_client_threads");
    wait_until("the warm-up clients are gone", || serving() == 2);
    let (fd0, th0) = (fds(), threads());

    let ws_addr = server.ws;
    let junk: Vec<Box<dyn Fn()>> = vec![
        Box::new(move || drop(tcp(ws_addr))), // connect, say nothing, leave
        Box::new(move || {
            let mut s = tcp(ws_addr);
            let _ = s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n"); // half a request, then silence
            std::thread::sleep(Duration::from_millis(20));
        }),
        Box::new(move || {
            let mut s = tcp(ws_addr);
            let _ = s.write_all(&[0xde, 0xad, 0xbe, 0xef, b'\r', b'\n', b'\r', b'\n']);
        }),
        Box::new(move || {
            let mut s = tcp(ws_addr);
            let long = format!("GET /ws HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(100 * 1024));
            let _ = s.write_all(long.as_bytes());
        }),
    ];
    let url = server.chat_url();
    for _ in 0..10 {
        for j in &junk {
            j();
        }
        let mut ws = connect_raw(&url).expect("a real client still gets in");
        ws.get_mut().write_all(&[0x81, 0x82, 1, 2, 3, 4, 0xfe, 0xfd]).unwrap(); // invalid UTF-8
        assert_eq!(expect_close(&mut ws).map(|f| f.code), Some(CloseCode::Invalid));
    }
    client.say("still served");
    assert_eq!(client.recv_type("message")["text"], "still served");
    // Half-open handshakes end at the 1 s handshake deadline; then everything is back.
    wait_until("fds back to baseline", || fds() <= fd0);
    assert!(threads() <= th0 + 64, "threads {} vs baseline {th0} (+ at most 64 idle, reusable)", threads());
    drop(client);
}

#[test]
fn oversized_upgrade_requests_get_431_and_the_server_carries_on() {
    let server = TestServer::start();
    let long_line = format!("GET /ws HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(100 * 1024));
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for (what, request) in [("100 KiB header line", long_line), ("2,000 headers", many)] {
        let mut s = tcp(server.ws);
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(request.as_bytes()); // the server may stop reading early
        let mut head = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut head).unwrap();
        let status = String::from_utf8_lossy(&head[..n]).into_owned();
        assert!(status.starts_with("HTTP/1.1 431"), "{what}: {status}");
    }
    server.chat();
}
