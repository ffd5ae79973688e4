//! The HTTP port's front (src/front.rs): what tiny_http alone would let through — huge or
//! countless headers, half-open requests, connection floods, fd exhaustion — gets a status
//! or a close, in bounded memory and threads, while real requests (keep-alive, pipelined,
//! `Expect: 100-continue`) are still served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::*;

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `request` (the server may stop reading part-way) and returns the status line.
fn status_after(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.write_all(request);
    let mut head = [0u8; 128];
    let n = s.read(&mut head).expect("a response, not a timeout");
    let text = String::from_utf8_lossy(&head[..n]).into_owned();
    text.lines().next().unwrap_or("").to_string()
}

/// Reads one response with a Content-Length body from a kept-alive connection.
fn read_one_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> HttpResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_response(&pending[..end + 4]);
            let len: usize = head.header("Content-Length").map_or(0, |v| v.parse().unwrap());
            if pending.len() >= end + 4 + len {
                let whole: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return parse_response(&whole);
            }
        }
        assert!(Instant::now() < deadline, "no complete response");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read (timeout WAIT)");
        assert!(n > 0, "connection closed before the response was complete");
        pending.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn oversized_requests_get_431_on_both_listeners() {
    let server = TestServer::start();
    for (addr, path) in [(server.http, "/"), (server.ws, "/ws")] {
        let long_line = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(100 * 1024));
        let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
        let many = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        for (what, request) in [("100 KiB header line", long_line), ("2,000 headers", many)] {
            let status = status_after(addr, request.as_bytes());
            assert!(status.starts_with("HTTP/1.1 431"), "{addr} {what}: {status}");
        }
    }
    assert_eq!(http_get(server.http, "/healthz").status, 200);
    server.chat();
}

#[test]
fn bad_requests_on_the_http_port_get_the_documented_status() {
    let server = TestServer::start();
    let cases: [(&str, &[u8], &str); 4] = [
        ("junk", b"\x16\x03\x01\x02\x00 not http\r\n\r\n", "400"),
        (
            "chunked body",
            b"POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "411",
        ),
        ("huge body", b"POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n", "413"),
        ("two lengths", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"),
    ];
    for (what, request, expected) in cases {
        let status = status_after(server.http, request);
        assert!(status.starts_with(&format!("HTTP/1.1 {expected}")), "{what}: {status}");
    }
    assert_eq!(http_get(server.http, "/healthz").status, 200);
}

#[test]
fn header_floods_on_the_http_port_use_bounded_memory() {
    let server = BinaryServer::start(&[]);
    let pid = server.child.id();
    assert_eq!(http_get(server.http, "/healthz").status, 200);
    let before = rss_kib(pid);
    // 100 connections at once, each sending a 1 MiB header line: tiny_http alone would
    // buffer all of it (100 MiB); the front stops each at 16 KiB with a 431.
    let line = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}", "a".repeat(1024 * 1024));
    let senders: Vec<_> = (0..100)
        .map(|_| {
            let (addr, line) = (server.http, line.clone());
            std::thread::spawn(move || status_after(addr, line.as_bytes()))
        })
        .collect();
    for s in senders {
        let status = s.join().unwrap();
        assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB for 100 MiB of headers");
    assert_eq!(http_get(server.http, "/healthz").status, 200);
}

#[test]
fn slowloris_on_both_listeners_costs_no_threads_and_ends_at_the_deadline() {
    let server = BinaryServer::start(&["--handshake-timeout-secs", "1"]);
    let pid = server.child.id();
    assert_eq!(http_get(server.http, "/healthz").status, 200);
    let threads_before = proc_count(pid, "task");
    let mut idle: Vec<(TcpStream, &str)> = vec![];
    for _ in 0..200 {
        for (addr, path, which) in [(server.http, "/", "http"), (server.ws, "/ws", "ws")] {
            let mut s = TcpStream::connect(addr).unwrap();
            // Start a request and never finish it.
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            idle.push((s, which));
        }
    }
    // Real clients are served meanwhile, on both ports.
    let mut c = Client::connect(&server.chat_url());
    c.say("not starved");
    assert_eq!(c.recv_type("message")["text"], "not starved");
    assert_eq!(http_get(server.http, "/api/config").status, 200);
    // The HTTP side holds 200 half-open requests without a thread each (the WebSocket side
    // does use one per connection, by design, until the deadline).
    let threads_during = proc_count(pid, "task");
    let started = Instant::now();
    let mut timeouts_408 = 0;
    for (mut s, which) in idle {
        let mut got = Vec::new();
        loop {
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a half-open {which} connection was not closed: {e}"),
            }
        }
        if which == "http" && got.starts_with(b"HTTP/1.1 408") {
            timeouts_408 += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "closed within the deadline");
    assert_eq!(timeouts_408, 200, "every half-open HTTP request is told 408");
    assert!(
        threads_during < threads_before + 200 + 30,
        "threads: {threads_before} before, {threads_during} with 200 + 200 half-open connections"
    );
    assert_eq!(http_get(server.http, "/healthz").status, 200);
}

#[test]
fn the_http_connection_cap_answers_503_and_frees_up() {
    let server = TestServer::with(|c| c.max_http_connections = 5);
    let held: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(server.http).unwrap()).collect();
    // The front registers connections in order; poll until the sixth is refused.
    wait_until("the sixth connection gets 503", || {
        status_after(server.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 503")
    });
    drop(held);
    wait_until("served again once they close", || {
        status_after(server.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200")
    });
}

#[test]
fn keep_alive_pipelining_and_100_continue_work_through_the_front() {
    let server = TestServer::start();
    let mut s = TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut pending = Vec::new();
    // Two requests in one write, then a third on the same connection.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /api/rooms HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_one_response(&mut s, &mut pending).text(), "ok\n");
    assert!(read_one_response(&mut s, &mut pending).text().contains("\"rooms\""));
    // A POST whose client waits for 100 Continue before sending the body.
    let body = r#"{"text":"through the front"}"#;
    write!(s, "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n").unwrap();
    write!(s, "Expect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let posted = read_one_response(&mut s, &mut pending);
    assert!(posted.status == 200 || posted.status == 201, "{posted:?}");
    assert!(posted.text().contains("\"seq\""), "{}", posted.text());
    // The connection stays usable.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_one_response(&mut s, &mut pending).status, 200);
}

#[test]
fn both_ports_recover_after_running_out_of_file_descriptors() {
    // 96 fds: the server needs about 20 of its own; the rest go to WebSocket clients.
    let server = BinaryServer::start_limited(&[], Some(96));
    assert_eq!(http_get(server.http, "/healthz").status, 200);
    // 120 upgrade requests, not waiting for answers: the server accepts until it runs out
    // of fds, the rest wait in the listen backlog.
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut hogs: Vec<TcpStream> = (0..120).map(|_| TcpStream::connect(server.ws).unwrap()).collect();
    for h in &mut hogs {
        h.write_all(upgrade.as_bytes()).unwrap();
    }
    wait_until("the server is out of fds", || proc_count(server.child.id(), "fd") >= 90);
    // An HTTP request now waits in the backlog (or is refused): the port must not die.
    let _ = status_after_within(server.http, Duration::from_millis(300));
    drop(hogs);
    wait_until("HTTP served again", || {
        status_after(server.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200")
    });
    wait_until("WebSocket upgrades work again", || connect_raw(&server.chat_url()).is_ok());

    // Now leave exactly enough fds for the front to accept and connect to tiny_http, but
    // not for tiny_http to accept: its accept thread panics (tiny_http unwraps a failed
    // `try_clone`). The front notices the refused socket and restarts tiny_http.
    let pid = server.child.id();
    let mut held = vec![];
    while proc_count(pid, "fd") < 96 - 3 {
        held.push(connect_raw(&server.chat_url()).expect("upgrade while fds remain"));
    }
    let _ = status_after_within(server.http, Duration::from_secs(1));
    drop(held);
    wait_until("HTTP served again after tiny_http's accept thread died", || {
        status_after(server.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200")
    });
    for _ in 0..5 {
        assert_eq!(http_get(server.http, "/healthz").status, 200, "stays up");
    }
    let mut c = Client::connect(&server.chat_url());
    c.say("back");
    assert_eq!(c.recv_type("message")["text"], "back");
}

/// Like `status_after` for `GET /healthz`, but any outcome (even none) within `within` is fine.
fn status_after_within(addr: SocketAddr, within: Duration) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head[..n]).into_owned())
}
