//! The operator's data: `threadchat backup` while a server writes, `threadchat verify` of a
//! whole copy and of damaged ones, and a history written by a newer threadchat refused
//! (exit 2) and left untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const CLI_WAIT: Duration = Duration::from_secs(30);

/// Sends numbered messages one at a time, each waiting for its ack, until `stop`: (text →
/// acknowledged seq).
fn writer(server: &TestServer, label: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeMap<String, u64>> {
    let mut c = server.chat();
    std::thread::spawn(move || {
        let mut acked = BTreeMap::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let text = format!("w{label} {n}");
            c.send_json(json!({"type": "message", "text": text, "ref": n}));
            let ack = c.recv_type("ack");
            acked.insert(text, ack["seq"].as_u64().unwrap());
        }
        acked
    })
}

#[test]
fn a_backup_taken_while_writers_commit_holds_every_acknowledged_message_once() {
    let dir = TempDir::new();
    let server = TestServer::in_dir(&dir.0, |_| {});
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|i| writer(&server, i, Arc::clone(&stop))).collect();
    wait_until("the writers have committed a few hundred", || {
        serde_json::from_slice::<Value>(&http_get(server.http, "/api/rooms").body).unwrap()["rooms"][0]["last_seq"]
            .as_u64()
            .unwrap_or(0)
            > 300
    });
    let out = dir.0.with_extension("backup.db");
    let (code, stdout, stderr) =
        run_cli(&["backup", "--data-dir", dir.0.to_str().unwrap(), out.to_str().unwrap()], CLI_WAIT);
    stop.store(true, Ordering::Relaxed);
    let acked: BTreeMap<String, u64> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    let last = summary["seqs"]["lobby"]["last"].as_u64().unwrap();
    assert!(last >= 300, "{summary}");
    // Writers kept committing after the copy's instant: the copy holds a prefix.
    let after = acked.values().filter(|&&s| s > last).count();
    assert!(after > 0, "the writers went on after the backup ({} acked, backup up to {last})", acked.len());
    // Every message acknowledged up to the copy's last seq is in it, once, at its seq.
    let copy = rusqlite::Connection::open(&out).unwrap();
    let rows: BTreeMap<u64, String> = copy
        .prepare("SELECT seq, text FROM messages WHERE room = 'lobby'")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len() as u64, last, "seq 1..={last}, each once");
    for (text, seq) in acked.iter().filter(|(_, s)| **s <= last) {
        assert_eq!(rows.get(seq), Some(text), "acknowledged {text:?} at {seq}");
    }
    let (code, verified, stderr) = run_cli(&["verify", out.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(verified.trim()).unwrap()["messages"], last);
    // Backup never overwrites.
    let (code, _, stderr) =
        run_cli(&["backup", "--data-dir", dir.0.to_str().unwrap(), out.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(stderr.contains("exists already"), "{stderr}");
    let _ = std::fs::remove_file(out);
}

#[test]
fn verify_tells_a_whole_history_from_a_damaged_one_and_from_something_else() {
    let dir = TempDir::new();
    {
        let server = TestServer::in_dir(&dir.0, |_| {});
        let mut c = server.chat();
        c.say_numbered(500, &"some text to fill pages ".repeat(8));
    }
    let good = dir.0.join("history.db");
    let work = TempDir::new();
    std::fs::create_dir_all(&work.0).unwrap();
    let copy = work.0.join("good.db");
    let (code, _, stderr) =
        run_cli(&["backup", "--data-dir", dir.0.to_str().unwrap(), copy.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 0, "{stderr}");
    let verify = |path: &std::path::Path| run_cli(&["verify", path.to_str().unwrap()], CLI_WAIT);
    let (code, out, _) = verify(&copy);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["seqs"]["lobby"]["count"], 500);
    assert!(good.exists());
    let bytes = std::fs::read(&copy).unwrap();
    // Truncated to half: damaged (1).
    let truncated = work.0.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = verify(&truncated);
    assert_eq!(code, 1, "{err}");
    // One page's bytes flipped: damaged (1).
    let flipped = work.0.join("flipped.db");
    let mut f = bytes.clone();
    let page = 4096 * (bytes.len() / 4096 / 2);
    for b in &mut f[page + 16..page + 400] {
        *b ^= 0xA5;
    }
    std::fs::write(&flipped, &f).unwrap();
    let (code, _, err) = verify(&flipped);
    assert_eq!(code, 1, "{err}");
    // A hole in a room's numbering (a row gone that retention did not take): damaged (1).
    let holed = work.0.join("holed.db");
    std::fs::write(&holed, &bytes).unwrap();
    rusqlite::Connection::open(&holed).unwrap().execute("DELETE FROM messages WHERE seq = 250", []).unwrap();
    let (code, _, err) = verify(&holed);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("numbering has holes: lobby: 1 of seq 1..=500 missing"), "{err}");
    // What retention removes (the oldest) is not a hole, and is reported as pruned.
    let pruned = work.0.join("pruned.db");
    std::fs::write(&pruned, &bytes).unwrap();
    rusqlite::Connection::open(&pruned).unwrap().execute("DELETE FROM messages WHERE seq <= 100", []).unwrap();
    let (code, out, err) = verify(&pruned);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["seqs"]["lobby"]["pruned_below"], 100);
    // An empty file, a text file, a missing one: not a threadchat history (2).
    let empty = work.0.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let text = work.0.join("notes.txt");
    std::fs::write(&text, "not a database, just some notes\n".repeat(20)).unwrap();
    for path in [&empty, &text, &work.0.join("missing.db")] {
        let (code, _, err) = verify(path);
        assert_eq!(code, 2, "{}: {err}", path.display());
    }
}

#[test]
fn a_history_written_by_a_newer_threadchat_is_refused_and_left_untouched() {
    let dir = TempDir::new();
    drop(TestServer::in_dir(&dir.0, |_| {}));
    let db = dir.0.join("history.db");
    rusqlite::Connection::open(&db).unwrap().execute("INSERT INTO schema_version (version) VALUES (99)", []).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (code, _, err) = run_cli(
        &["--http-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--data-dir", dir.0.to_str().unwrap()],
        CLI_WAIT,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("newer threadchat") && err.contains("99"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing was changed");
    let (code, _, err) = run_cli(&["verify", db.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn restore_is_refused_under_a_running_server_then_numbering_continues_and_retention_prunes() {
    let dir = TempDir::new();
    let work = TempDir::new();
    std::fs::create_dir_all(&work.0).unwrap();
    let backup = work.0.join("backup.db");
    let d = dir.0.to_str().unwrap();
    {
        let server = TestServer::in_dir(&dir.0, |_| {});
        let mut c = server.chat();
        c.say_numbered(100, "before the backup");
        let (code, _, err) = run_cli(&["backup", "--data-dir", d, backup.to_str().unwrap()], CLI_WAIT);
        assert_eq!(code, 0, "{err}");
        c.say_numbered(100, "after the backup");
        // A server runs on the directory: refused, whatever the flags.
        let (code, _, err) = run_cli(&["restore", "--data-dir", d, "--force", backup.to_str().unwrap()], CLI_WAIT);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("a server is running"), "{err}");
    }
    // Stopped, but the history holds messages: only with --force.
    let (code, _, err) = run_cli(&["restore", "--data-dir", d, backup.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("holds 200 messages") && err.contains("--force"), "{err}");
    let (code, out, err) = run_cli(&["restore", "--data-dir", d, "--force", backup.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["seqs"]["lobby"]["last"], 100);
    // The server numbers on from the restored 100, and a client resuming from 100 gets only
    // what is new: no stale or duplicate message.
    let server = TestServer::in_dir(&dir.0, |c| c.history_limit = 50);
    let mut back = Client::connect(&format!("{}?resume=lobby:100", server.chat_url()));
    let mut writer = server.chat();
    writer.say("after the restore");
    let m = back.recv_type("message");
    assert_eq!((m["seq"].as_u64(), m["text"].as_str()), (Some(101), Some("after the restore")));
    // Retention (--history-limit 50) still prunes the restored history.
    wait_until("the pruner trimmed the restored history to 50", || {
        let page: Value =
            serde_json::from_slice(&http_get(server.http, "/api/rooms/lobby/messages?after=0&limit=1").body).unwrap();
        page["messages"][0]["seq"].as_u64().unwrap_or(0) >= 52
    });
}

#[test]
fn export_then_import_gives_the_same_messages_and_filters_select() {
    let dir = TempDir::new();
    let user = {
        let server = TestServer::in_dir(&dir.0, |_| {});
        let mut a = server.chat();
        let mut b = server.chat();
        a.say("from a in the lobby");
        a.recv_type("message");
        b.send_json(json!({"type": "join", "room": "dev"}));
        b.recv_type("presence");
        b.send_json(json!({"type": "message", "room": "dev", "text": "from b in dev"}));
        b.recv_type("message");
        b.send_json(json!({"type": "dm", "to_user": a.user, "text": "b to a"}));
        b.recv_type("dm");
        b.user.clone()
    };
    let d = dir.0.to_str().unwrap();
    let (code, all, err) = run_cli(&["export", "--data-dir", d], CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = all.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert!(lines.iter().all(|l| l["user"].as_str().is_some_and(|u| u.starts_with("guest~"))));
    let (_, mine, _) = run_cli(&["export", "--data-dir", d, "--user", &user], CLI_WAIT);
    assert_eq!(mine.lines().count(), 2, "b's two: {mine}");
    let (_, dev, _) = run_cli(&["export", "--data-dir", d, "--room", "dev"], CLI_WAIT);
    assert_eq!(dev.lines().count(), 1);
    let (_, later, _) = run_cli(&["export", "--data-dir", d, "--since", "4102444800"], CLI_WAIT);
    assert_eq!(later.lines().count(), 0, "nothing after 2100");
    // Into an empty history (a fresh SQLite directory, or Postgres in its pass), and out again.
    let work = TempDir::new();
    std::fs::create_dir_all(&work.0).unwrap();
    let file = work.0.join("export.jsonl");
    std::fs::write(&file, &all).unwrap();
    let target = work.0.join("data");
    let mut into = vec!["import", "--data-dir", target.to_str().unwrap()];
    let database = test_database();
    if let Some(url) = &database {
        into.extend(["--database", url]);
    }
    into.push(file.to_str().unwrap());
    let (code, _, err) = run_cli(&into, CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    let mut out = vec!["export", "--data-dir", target.to_str().unwrap()];
    if let Some(url) = &database {
        out.extend(["--database", url]);
    }
    let (code, again, err) = run_cli(&out, CLI_WAIT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, all, "the same messages, the same lines");
    // Not into a history that holds messages; a bad line is named.
    let (code, _, err) = run_cli(&into, CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("holds messages already"), "{err}");
    let bad = work.0.join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"room\":\"Not A Room\",\"seq\":1,\"name\":\"x\",\"text\":\"x\",\"ts\":1}}\n",
            all.lines().next().unwrap()
        ),
    )
    .unwrap();
    let (code, _, err) =
        run_cli(&["import", "--data-dir", work.0.join("other").to_str().unwrap(), bad.to_str().unwrap()], CLI_WAIT);
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");
}
