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
fn send_and_tail_take_a_room_and_tail_replays_since_a_seq() {
    use std::io::{BufRead, BufReader};
    let server = TestServer::start();
    let url = server.chat_url();
    for (room, text) in [("ops", "one"), ("lobby", "elsewhere"), ("ops", "two")] {
        let (code, out, err) = run_cli(&["send", &url, text, "--room", room], CLI_WAIT);
        assert_eq!(code, 0, "stderr: {err}");
        let sent: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!((sent["room"].as_str(), sent["text"].as_str()), (Some(room), Some(text)));
    }
    // --since 1: the stored ops message after seq 1, and nothing of lobby.
    let args =
        ["tail", &url, "--room", "ops", "--since", "1", "--type", "message", "--count", "1", "--timeout-secs", "10"];
    let (code, out, err) = run_cli(&args, CLI_WAIT);
    assert_eq!(code, 0, "stderr: {err}");
    let replayed: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!((replayed["room"].as_str(), replayed["seq"].as_u64()), (Some("ops"), Some(2)), "{replayed}");
    // Live: a tail of ops prints the next ops message, not a lobby one sent before it.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_threadchat"))
        .args(["tail", &url, "--room", "ops", "--type", "message", "--count", "1", "--timeout-secs", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(tail.stderr.take().unwrap()).read_line(&mut said).unwrap();
    assert!(said.starts_with("connected as client"), "{said}");
    assert_eq!(run_cli(&["send", &url, "noise"], CLI_WAIT).0, 0);
    assert_eq!(run_cli(&["send", &url, "three", "--room", "ops"], CLI_WAIT).0, 0);
    let (status, out) = wait_child(&mut tail);
    assert!(status.success(), "{status}");
    let live: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!((live["room"].as_str(), live["text"].as_str()), (Some("ops"), Some("three")), "{live}");
    // A room the server refuses: exit 1 with its reason.
    let (code, _, err) = run_cli(&["send", &url, "x", "--room", "Not A Room"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("room"), "{err}");
}

/// A tail without `--count` ends when the server closes, with exit 0 — and answers the
/// server's Close, so the server's shutdown does not wait out its grace period for it.
#[test]
fn tail_answers_the_servers_close_and_exits_0() {
    let mut server = TestServer::start();
    let url = server.chat_url();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_threadchat"))
        .args(["tail", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("tail connected", || server.hub_len() == 1);
    let took = server.shutdown();
    // Shutdown waits up to 3 s for clients to answer its Close; one that answers at once
    // lets it finish in a fraction of that.
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}: tail did not answer the Close");
    let (status, _) = wait_child(&mut tail);
    assert!(status.success(), "{status}");
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
    for flag in ["THREADCHAT_WS_ADDR", "[default: 65536]", "[default: 30]"] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    // docs/configuration.md and --help list the same flags under the same headings.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let sections = |text: &str, heading: fn(&str) -> Option<&str>, flag: fn(&str) -> Vec<String>| {
        let mut found: Vec<(String, String)> = vec![];
        let mut current = String::new();
        for line in text.lines() {
            if let Some(h) = heading(line) {
                current = h.to_string();
            }
            found.extend(flag(line).into_iter().map(|f| (current.clone(), f)));
        }
        found.sort();
        found
    };
    let in_doc = sections(
        &doc,
        |l| l.strip_prefix("## "),
        |l| match l.strip_prefix("| ") {
            Some(row) => {
                let flags = row.split(" | ").next().unwrap_or("").split(", ").map(|f| f.trim_matches('`'));
                flags.filter(|f| f.starts_with("--")).map(str::to_string).collect()
            }
            None => vec![],
        },
    );
    let in_help = sections(
        &out,
        |l| l.strip_suffix(':').filter(|h| !h.starts_with(' ') && !h.is_empty() && *h != "Options" && *h != "Commands"),
        |l| {
            let l = l.trim_start();
            match l.strip_prefix("--").and_then(|f| f.split(' ').next()) {
                Some(f) if !matches!(f, "help" | "version") && l.starts_with("--") => vec![format!("--{f}")],
                _ => vec![],
            }
        },
    );
    assert!(in_doc.len() >= 38, "{in_doc:?}");
    assert_eq!(in_doc, in_help, "docs/configuration.md and --help disagree");
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

#[test]
fn help_documents_the_exit_codes_and_jwt_is_an_alias_of_token() {
    for command in ["send", "tail"] {
        let (code, out, _) = run_cli(&[command, "--help"], CLI_WAIT);
        assert_eq!(code, 0);
        for line in ["Exit status:", "0  done", "1  could not connect", "2  bad arguments", "3  timed out"] {
            assert!(out.contains(line), "{command} --help lacks {line:?}:\n{out}");
        }
        assert!(out.contains("--jwt") && out.contains("--ca-file"), "{out}");
    }
    let secret = "a-jwt-secret-of-decent-length-0123456789";
    let server = TestServer::with(|c| c.jwt_secret = Some(secret.into()));
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let token = jwt(secret, serde_json::json!({"sub": "ada", "exp": exp}));
    let (code, out, err) = run_cli(&["send", &server.chat_url(), "signed", "--jwt", &token], CLI_WAIT);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("\"name\":\"ada\""), "{out}");
    // Without it: refused with the status, exit 1.
    let (code, _, err) = run_cli(&["send", &server.chat_url(), "unsigned"], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn a_bad_private_room_pattern_is_a_flag_error() {
    for bad in ["Team A", "team-*-x", "*team", ""] {
        let args = [
            "--private-room",
            bad,
            "--http-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--data-dir",
            "/nonexistent-threadchat",
        ];
        let (code, _, err) = run_cli(&args, CLI_WAIT);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("--private-room"), "{err}");
    }
}

/// `--identity-file`: every run is the same guest (the same user id), the file is private,
/// and an identity the server does not know is refused (exit 1, the 401's reason).
#[test]
fn an_identity_file_makes_every_run_the_same_user() {
    let server = TestServer::start();
    let url = server.chat_url();
    let dir = TempDir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("identity");
    let path = file.to_str().unwrap();
    let user_of = |out: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
        v["user"].as_str().unwrap().to_string()
    };
    let (code, first, err) = run_cli(&["send", &url, "one", "--identity-file", path], CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let (code, second, err) = run_cli(&["send", &url, "two", "--identity-file", path], CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(user_of(&first), user_of(&second), "the same user both times");
    assert!(user_of(&first).starts_with("guest~"));
    // Without the file: someone new.
    let (_, other, _) = run_cli(&["send", &url, "three"], CLI_WAIT);
    assert_ne!(user_of(&other), user_of(&first));
    // Altered: refused, by name.
    let kept = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{}x", kept.trim())).unwrap();
    let (code, _, err) = run_cli(&["send", &url, "four", "--identity-file", path], CLI_WAIT);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401") && err.contains("identity not issued by this server"), "{err}");
}
