//! `/metrics`, `/api/stats`, and the join-notice limit that keeps crowds affordable.

use std::io::Write;

use serde_json::Value;

use crate::support::*;

fn metric(server: &TestServer, line_prefix: &str) -> u64 {
    let text = http_get(server.http, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {line_prefix} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_what_happened() {
    let server = TestServer::start();
    let r = http_get(server.http, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));

    let mut a = server.chat();
    let mut b = server.chat();
    a.recv_type("join");
    for i in 0..3 {
        a.say(&format!("m{i}"));
    }
    for _ in 0..3 {
        b.recv_type("message");
    }
    a.send_json(serde_json::json!({"type": "bogus"}));
    a.recv_type("error");
    assert_eq!(metric(&server, "threadchat_clients{endpoint=\"chat\"}"), 2);
    assert_eq!(metric(&server, "threadchat_messages_received_total"), 3);
    // 3 messages to 2 clients, plus b's join to a.
    assert_eq!(metric(&server, "threadchat_deliveries_total"), 7);
    assert_eq!(metric(&server, "threadchat_error_replies_total"), 1);
    assert_eq!(metric(&server, "threadchat_connections_total"), 2);
    assert!(metric(&server, "threadchat_bytes_sent_total") > 300);
    assert!(metric(&server, "threadchat_frames_received_total") >= 4);

    // A protocol violation and a refused path are counted by reason and status.
    let mut raw = connect_raw(&server.chat_url()).unwrap();
    raw.get_mut().write_all(&[0x83, 0x80, 1, 2, 3, 4]).unwrap(); // reserved opcode
    expect_close(&mut raw);
    assert!(connect_raw(&format!("ws://{}/nope", server.ws)).is_err());
    drop(b);
    wait_until("disconnects counted", || {
        metric(&server, "threadchat_disconnects_total{reason=\"protocol_error\"}") == 1
            && metric(&server, "threadchat_disconnects_total{reason=\"gone\"}") == 1
    });
    assert_eq!(metric(&server, "threadchat_refusals_total{reason=\"not_found\"}"), 1);
}

#[test]
fn stats_api_reports_per_second_samples() {
    let server = TestServer::start();
    let mut c = server.chat();
    for i in 0..5 {
        c.say(&format!("burst {i}"));
    }
    for _ in 0..5 {
        c.recv_type("message");
    }
    let mut samples: Vec<Value> = vec![];
    wait_until("a sample that saw the burst", || {
        let v: Value = serde_json::from_slice(&http_get(server.http, "/api/stats").body).unwrap();
        samples = v["samples"].as_array().cloned().unwrap_or_default();
        samples.iter().any(|s| s["messages_per_sec"].as_f64().unwrap_or(0.0) > 0.0)
    });
    let last = samples.last().unwrap();
    assert_eq!(last["clients"], 1);
    assert!(last["t"].as_u64().unwrap() > 1_600_000_000_000);
    let page = http_get(server.http, "/stats.html");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("stats.js"));
}

#[test]
fn join_and_leave_notices_stop_above_the_limit() {
    let server = TestServer::with(|c| c.join_notice_limit = 2);
    let mut a = server.chat();
    let b = server.chat();
    assert_eq!(a.recv_type("join")["id"], b.id, "2 members: within the limit");
    let mut c = server.chat(); // 3 members: no join notice, and presence lists only 2 of 3
    let p = {
        c.send_json(serde_json::json!({"type": "leave", "room": "lobby"}));
        c.recv_type("leave");
        c.send_json(serde_json::json!({"type": "join", "room": "lobby"}));
        c.recv_type("presence")
    };
    assert_eq!((p["count"].as_u64(), p["members"].as_array().unwrap().len()), (Some(3), 2));
    c.say("after c");
    let next = a.recv();
    assert_eq!((next["type"].as_str(), next["text"].as_str()), (Some("message"), Some("after c")));
    drop(c); // back to 2: this leave is not announced either
    wait_until("c gone", || server.hub_len() == 2);
    let b_id = b.id;
    drop(b); // 2 → 1: announced
    let next = a.recv();
    assert_eq!((next["type"].as_str(), next["id"].as_u64()), (Some("leave"), Some(b_id)));
}
