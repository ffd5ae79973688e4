//! `examples/minimal.rs`, the whole idea in one file, really works: its page is served, two
//! clients chat through it, and Ctrl-C stops it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use tungstenite::Message;

use crate::support::*;

#[test]
fn the_minimal_example_serves_its_page_and_chats() {
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
    let mut addr =
        |prefix: &str| -> SocketAddr { lines.next().unwrap().unwrap().strip_prefix(prefix).unwrap().parse().unwrap() };
    let (http, ws) = (addr("http listening on http://"), addr("ws listening on ws://"));
    let page = http_get(http, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains(&format!(":{}/", ws.port())), "the page connects to the WebSocket port");
    let mut alice = connect_raw(&format!("ws://{ws}/")).unwrap();
    let mut bob = connect_raw(&format!("ws://{ws}/")).unwrap();
    // Both are in the list once the server has accepted them; poll with a message.
    wait_until("bob hears alice", || {
        alice.send(Message::text("hello")).unwrap();
        bob.get_ref().set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
        matches!(bob.read(), Ok(Message::Text(t)) if t.as_str() == "hello")
    });
    bob.get_ref().set_read_timeout(Some(WAIT)).unwrap();
    bob.send(Message::text("hi alice")).unwrap();
    loop {
        match alice.read().unwrap() {
            Message::Text(t) if t.as_str() == "hi alice" => break,
            _ => {}
        }
    }
    // Ctrl-C: clients get a Close, the process exits 0.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    expect_close(&mut bob); // panics unless a Close frame arrives within WAIT
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the example did not exit on Ctrl-C");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
