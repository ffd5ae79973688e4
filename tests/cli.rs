//! The real binary as a script would use it: `send`, `tail`, and flag validation.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const CLI_WAIT: Duration = Duration::from_secs(15);

#[test]
fn send_prints_its_own_broadcast_and_tail_sees_it() {
    let server = TestServer::start();
    let url = server.chat_url();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_threadchat"))
        .args(["tail", &url, "--count", "2", "--type", "message", "--timeout-secs", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("tail connected", || server.hub_len() == 1);

    let (code, out, err) = run_cli(&["send", &url, "hello from a script", "--name", "bot"], CLI_WAIT);
    assert_eq!(code, 0, "stderr: {err}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(line["type"], "message");
    assert_eq!(line["text"], "hello from a script");
    assert_eq!(line["name"], "bot");
    let (code, _, err) = run_cli(&["send", &url, "second"], CLI_WAIT);
    assert_eq!(code, 0, "stderr: {err}");

    let output = wait_child(&mut tail);
    assert!(output.0.success());
    let lines: Vec<serde_json::Value> = output.1.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["text"], "hello from a script");
    assert_eq!(lines[1]["text"], "second");
}

fn wait_child(child: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + CLI_WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "child did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status, out)
}

#[test]
fn send_to_echo_prints_the_echo() {
    let server = TestServer::start();
    let (code, out, err) = run_cli(&["send", &server.echo_url(), "ping? pong!"], CLI_WAIT);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "ping? pong!\n");
}

#[test]
fn send_fails_clearly() {
    let server = TestServer::start();
    let (code, _, err) = run_cli(&["send", &format!("ws://{}/nope", server.ws), "x"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 404"), "{err}");

    let (code, _, err) = run_cli(&["send", &server.chat_url(), ""], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("must not be empty"), "{err}");

    // Nothing listens on 127.0.0.3 at a port held on 127.0.0.1 (held, not dropped: a
    // released port could be taken by another test meanwhile).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let url = format!("ws://127.0.0.3:{port}/ws");
    let (code, _, err) = run_cli(&["send", &url, "x", "--timeout-secs", "2"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");

    let (code, _, err) = run_cli(&["send", "http://example/ws", "x"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("ws://"), "{err}");
}

#[test]
fn tail_times_out_with_exit_3() {
    let server = TestServer::start();
    let (code, out, err) =
        run_cli(&["tail", &server.chat_url(), "--count", "1", "--type", "message", "--timeout-secs", "1"], CLI_WAIT);
    assert_eq!(code, 3, "stderr: {err}");
    assert!(out.is_empty());
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["--max-clients", "lots"][..],
        &["--max-message-bytes", "10"][..],
        &["--ping-interval-secs", "0"][..],
        &["--ws-addr", "not-an-address"][..],
        &["--static-dir", "/definitely/not/here"][..],
        &["--no-such-flag"][..],
    ] {
        let (code, out, err) = run_cli(args, CLI_WAIT);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
    }
}

#[test]
fn help_documents_every_flag_and_default() {
    let (code, out, _) = run_cli(&["--help"], CLI_WAIT);
    assert_eq!(code, 0);
    for flag in [
        "--http-addr",
        "--ws-addr",
        "--static-dir",
        "--max-message-bytes",
        "--ping-interval-secs",
        "--max-clients",
        "--max-queued-bytes",
        "--handshake-timeout-secs",
        "--public-ws-url",
        "--http-threads",
        "THREADCHAT_WS_ADDR",
        "[default: 65536]",
        "[default: 30]",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn address_already_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run_cli(&["--ws-addr", &addr, "--http-addr", "127.0.0.1:0"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen for WebSocket"), "{err}");
}

#[test]
fn send_and_tail_authenticate_with_a_token() {
    const TOKEN: &str = "correct-horse-battery-staple";
    let server = TestServer::with(|c| c.token = Some(TOKEN.into()));
    let url = server.chat_url();
    let (code, _, err) = run_cli(&["send", &url, "no token"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    let (code, out, err) = run_cli(&["send", &url, "with token", "--token", TOKEN], CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"with token\""), "{out}");
    let (code, _, err) = run_cli(
        &["tail", &url, "--count", "1", "--type", "message", "--timeout-secs", "1", "--token", TOKEN],
        CLI_WAIT,
    );
    assert_eq!(code, 3, "authenticated, then timed out waiting: {err}");
}
