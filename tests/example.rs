//! `examples/minimal.rs`, the whole idea in one file, really works — at its own defaults,
//! against the clients the server meets: its page is served and two clients chat; a client
//! that never reads is closed while the others are served; a silent one is dropped by the
//! heartbeat; a flood gets 1008; a Close is answered; an oversized message gets 1009;
//! Ctrl-C ends it even with a client stuck in a write.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

/// The example, started on free ports; killed on drop.
struct Minimal {
    child: Child,
    http: SocketAddr,
    ws: SocketAddr,
}

impl Minimal {
    fn start() -> Minimal {
        // `cargo test` builds the examples next to the test binaries (target/debug/examples).
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("examples/minimal");
        assert!(bin.exists(), "{} is missing: run `cargo test` (which builds the examples)", bin.display());
        let mut child = Command::new(&bin)
            .args(["127.0.0.1:0", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = |prefix: &str| -> SocketAddr {
            lines.next().unwrap().unwrap().strip_prefix(prefix).unwrap().parse().unwrap()
        };
        let (http, ws) = (addr("http listening on http://"), addr("ws listening on ws://"));
        Minimal { child, http, ws }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.ws)
    }

    /// A client from `local` whose server-side thread is registered (its first message
    /// comes back to it).
    fn chatter(&self, local: IpAddr) -> tungstenite::WebSocket<TcpStream> {
        let mut ws = connect_from(Some(local), &self.url(), &[]).unwrap();
        wait_until("the client is in the list", || {
            ws.send(Message::text("ping?")).unwrap();
            ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            matches!(ws.read(), Ok(Message::Text(t)) if t.as_str() == "ping?")
        });
        ws.get_ref().set_read_timeout(Some(WAIT)).unwrap();
        ws
    }

    fn interrupt(&self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    /// Waits for the process to exit; its status, or a panic after `within`.
    fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        wait_child(&mut self.child, within)
    }
}

impl Drop for Minimal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection from `local` with a small receive buffer, upgraded, that will never
/// read again (its socket fills after a few KiB).
fn non_reader(m: &Minimal, local: IpAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
    socket.connect_timeout(&m.ws.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let raw = stream.try_clone().unwrap();
    let (ws, _) = tungstenite::client::client(m.url(), stream).unwrap();
    std::mem::forget(ws); // keep the socket; never read through tungstenite again
    raw
}

/// Reads raw bytes until the server closes the socket; true if it did within `within`.
fn closed_within(mut socket: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

/// `senders` clients (from 127.0.0.2) each sending `count` messages of `size` bytes within
/// the example's message rate (20 a second), their own copies drained by a thread each, so
/// no sender becomes a slow reader itself.
fn flood(m: &Minimal, senders: usize, count: usize, size: usize) -> Vec<std::thread::JoinHandle<()>> {
    (0..senders)
        .map(|s| {
            let mut sender = m.chatter(other_ip());
            let mut drain = sender.get_ref().try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
            });
            std::thread::spawn(move || {
                for i in 0..count {
                    let text = format!("{s}:{i:05} {}", "x".repeat(size));
                    if sender.send(Message::text(text)).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(55)); // under 20 a second
                }
            })
        })
        .collect()
}

#[test]
fn the_minimal_example_serves_its_page_and_chats() {
    let mut m = Minimal::start();
    let page = http_get(m.http, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains(&format!(":{}/", m.ws.port())), "the page connects to the WebSocket port");
    let mut alice = m.chatter([127, 0, 0, 1].into());
    let mut bob = m.chatter([127, 0, 0, 1].into());
    bob.send(Message::text("hi alice")).unwrap();
    while !matches!(alice.read().unwrap(), Message::Text(t) if t.as_str() == "hi alice") {}
    // Ctrl-C: clients get a Close, the process exits 0.
    m.interrupt();
    expect_close(&mut bob); // panics unless a Close frame arrives within WAIT
    assert!(m.exit_within(WAIT).success());
}

#[test]
fn a_client_that_never_reads_is_closed_and_the_others_are_served() {
    let m = Minimal::start();
    let stuck = non_reader(&m, [127, 0, 0, 3].into());
    let mut innocent = m.chatter([127, 0, 0, 4].into());
    // 4 senders × 60 messages of 60 KiB: 14 MB for the non-reader, whose queue fills.
    let sending = flood(&m, 4, 60, 60 * 1024);
    // The innocent client gets every message while the non-reader's queue fills.
    let mut got = 0;
    while got < 240 {
        match innocent.read().unwrap() {
            Message::Text(t) if t.as_str().contains(':') => got += 1,
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("after {got} messages: {other:?}"),
        }
    }
    for s in sending {
        s.join().unwrap();
    }
    assert!(closed_within(&stuck, WAIT * 3), "the non-reader was never closed");
}

#[test]
fn a_flood_is_closed_with_1008_and_the_others_are_served() {
    let m = Minimal::start();
    let mut innocent = m.chatter([127, 0, 0, 10].into());
    let mut flooder = m.chatter([127, 0, 0, 11].into());
    for i in 0..200 {
        if flooder.send(Message::text(format!("flood {i}"))).is_err() {
            break;
        }
    }
    let frame = expect_close(&mut flooder).expect("a Close frame with a code");
    assert_eq!(frame.code, CloseCode::Policy);
    // The innocent one saw at most the burst, and is still served.
    innocent.send(Message::text("after the flood")).unwrap();
    let mut floods = 0;
    loop {
        match innocent.read().unwrap() {
            Message::Text(t) if t.as_str() == "after the flood" => break,
            Message::Text(t) if t.as_str().starts_with("flood") => floods += 1,
            _ => {}
        }
    }
    assert!(floods <= 41, "{floods} flood messages got through (the burst is 40)");
}

#[test]
fn a_silent_client_is_dropped_by_the_heartbeat() {
    let m = Minimal::start();
    // Upgraded, then never a byte back: no pong to the pings.
    let silent = non_reader(&m, [127, 0, 0, 5].into());
    assert!(closed_within(&silent, Duration::from_secs(20)), "not dropped within 20 s (pings every 5 s)");
}

#[test]
fn a_close_is_answered_and_an_oversized_message_gets_1009() {
    let m = Minimal::start();
    let mut polite = m.chatter([127, 0, 0, 6].into());
    polite.close(None).unwrap();
    expect_close(&mut polite); // panics unless the server's Close reply arrives within WAIT
    let mut big = m.chatter([127, 0, 0, 7].into());
    big.send(Message::text("y".repeat(64 * 1024 + 1))).unwrap();
    let frame = expect_close(&mut big).expect("a Close frame with a code");
    assert_eq!(frame.code, CloseCode::Size);
    // Others carry on.
    let mut other = m.chatter([127, 0, 0, 8].into());
    other.send(Message::text("still here")).unwrap();
    while !matches!(other.read().unwrap(), Message::Text(t) if t.as_str() == "still here") {}
}

#[test]
fn ctrl_c_ends_it_even_with_a_client_stuck_in_a_write() {
    let mut m = Minimal::start();
    let _stuck = non_reader(&m, [127, 0, 0, 9].into());
    for s in flood(&m, 4, 40, 60 * 1024) {
        s.join().unwrap();
    }
    m.interrupt();
    // SHUTDOWN_GRACE (2 s), then the stuck socket is cut.
    assert!(m.exit_within(Duration::from_secs(8)).success());
}
