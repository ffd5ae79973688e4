//! Moderation (docs/moderation.md): the admin token and JWT roles, kick (4003), ban (the
//! upgrade's 403, a restart kept), mute, delete (tombstones in history and resumes),
//! announce, the audit log, `threadchat admin`, and what an attacker tries against each.

use super::support::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789";
const SECRET: &str = "moderation-test-secret-of-32-bytes!!";

fn admin_call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    call(addr, method, path, &format!("Authorization: Bearer {ADMIN}"), body)
}

fn call(addr: SocketAddr, method: &str, path: &str, auth: &str, body: Option<Value>) -> HttpResponse {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![auth];
    if !body.is_empty() {
        headers.push("Content-Type: application/json");
    }
    http_request_from(None, addr, method, path, &headers, &body)
}

fn body(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// The status and body of a refused upgrade.
fn refusal(url: &str) -> (u16, String) {
    match connect_raw(url) {
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned(),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, but the upgrade succeeded"),
    }
}

fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": 4_000_000_000u64 });
    if let (Some(c), Value::Object(more)) = (claims.as_object_mut(), extra) {
        c.extend(more);
    }
    jwt(SECRET, claims)
}

#[test]
fn without_an_admin_token_or_jwt_secret_the_moderation_api_does_not_exist() {
    let server = BinaryServer::start_defaults(&[]);
    for (method, path) in [
        ("GET", "/api/admin/bans"),
        ("POST", "/api/admin/kick"),
        ("GET", "/api/admin/audit"),
        ("DELETE", "/api/rooms/lobby/messages/1"),
    ] {
        let r = admin_call(server.http, method, path, None);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
}

#[test]
fn the_admin_token_kicks_bans_past_a_restart_unbans_and_the_audit_log_keeps_it_all() {
    let data = TempDir::new();
    let dir = data.0.to_str().unwrap().to_string();
    let args = ["--admin-token", ADMIN, "--data-dir", &dir];
    let mut server = BinaryServer::start(&args);
    let mut bob = Client::connect(&server.chat_url());
    let bob_user = bob.user.clone();
    let mut alice = Client::connect_from(Some(other_ip()), &server.chat_url());

    // Kick: every connection closed with 4003 and the reason; coming back is allowed.
    let mut bob2 = bob.again(&server.chat_url());
    let r = admin_call(server.http, "POST", "/api/admin/kick", Some(json!({"user": bob_user, "reason": "cool off"})));
    assert_eq!((r.status, body(&r)["connections"].as_u64()), (200, Some(2)), "{}", r.text());
    for c in [&mut bob, &mut bob2] {
        let close = c.expect_close().expect("a close frame");
        assert_eq!((u16::from(close.code), close.reason.as_str()), (4003, "kicked: cool off"));
    }
    alice.say("still here");
    assert_eq!(alice.recv_type("message")["text"], "still here", "the others keep chatting");
    let mut bob = bob.again(&server.chat_url());

    // Ban by name for an hour: closed, then refused at the door with the reason and the end.
    let r = admin_call(
        server.http,
        "POST",
        "/api/admin/ban",
        Some(json!({"name": bob.name, "seconds": 3600, "reason": "spam"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = body(&r)["id"].as_str().expect("a ban id").to_string();
    assert_eq!(u16::from(bob.expect_close().unwrap().code), 4003);
    let identity = bob.identity.clone().unwrap();
    let bob_url = format!("{}?identity={identity}", server.chat_url());
    let (status, why) = refusal(&bob_url);
    assert_eq!(status, 403);
    assert!(why.starts_with("banned until 20") && why.contains(": spam"), "{why}");
    let bans = body(&admin_call(server.http, "GET", "/api/admin/bans", None));
    assert_eq!(bans["bans"][0]["target"], bob_user.as_str(), "{bans}");
    assert_eq!(bans["bans"][0]["by"], "admin token");
    assert_eq!(metric(server.http, "threadchat_moderation_actions_total{action=\"ban\"}"), 1);
    wait_until("three connections counted as closed by a moderator", || {
        metric(server.http, "threadchat_disconnects_total{reason=\"moderator\"}") == 3
    });

    // A restart keeps the ban.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(WAIT).success());
    let server = BinaryServer::start(&args);
    let bob_url = format!("{}?identity={identity}", server.chat_url());
    assert_eq!(refusal(&bob_url).0, 403, "the ban survived the restart");
    // Unban: bob comes back; a second unban finds nothing.
    let r = admin_call(server.http, "DELETE", &format!("/api/admin/bans/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(Client::connect(&bob_url).user, bob_user);
    assert_eq!(admin_call(server.http, "DELETE", &format!("/api/admin/bans/{id}"), None).status, 404);

    // An address ban: that address is refused, another is not.
    let r = admin_call(server.http, "POST", "/api/admin/ban", Some(json!({"address": "127.0.0.1", "reason": "flood"})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(refusal(&server.chat_url()).0, 403);
    assert_eq!(http_get(server.http, "/api/rooms").status, 403, "the API refuses it too");
    Client::connect_from(Some(other_ip()), &server.chat_url());

    // The audit log, newest first, paged.
    let page = body(&admin_call(server.http, "GET", "/api/admin/audit?limit=2", None));
    let actions: Vec<&str> =
        page["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["ban", "unban"], "{page}");
    let next = page["next"].as_str().expect("another page");
    let rest = body(&admin_call(server.http, "GET", &format!("/api/admin/audit?before={next}"), None));
    let actions: Vec<&str> =
        rest["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["ban", "kick"], "{rest}");
    assert_eq!(rest["entries"][1]["actor"], "admin token");
    assert_eq!(rest["entries"][1]["reason"], "cool off");
}

#[test]
fn moderators_act_in_their_rooms_over_the_websocket_and_members_delete_their_own() {
    let server = TestServer::with(|c| c.jwt_secret = Some(SECRET.into()));
    let url = server.chat_url();
    let moderator = token("mo", json!({"roles": ["mod"], "mod_rooms": ["lobby"]}));
    let mut mo = Client::signed_in(&url, &moderator);
    let mut al = Client::signed_in(&url, &token("al", json!({})));

    // A member deletes its own message; not another's.
    al.send_json(json!({"type": "message", "text": "oops", "ref": 1}));
    let seq = al.recv_type("ack")["seq"].as_u64().unwrap();
    mo.send_json(json!({"type": "message", "text": "mine", "ref": 2}));
    let mo_seq = mo.recv_type("ack")["seq"].as_u64().unwrap();
    al.send_json(json!({"type": "delete", "room": "lobby", "seq": mo_seq, "ref": 3}));
    let e = al.recv_type("error");
    assert_eq!(e["ref"], 3);
    assert!(e["error"].as_str().unwrap().contains("only your own"), "{e}");
    al.send_json(json!({"type": "delete", "room": "lobby", "seq": seq, "ref": 4}));
    assert_eq!(al.recv_type("done")["ref"], 4);
    assert_eq!(mo.recv_type("deleted"), json!({"type": "deleted", "room": "lobby", "seq": seq}));

    // The moderator deletes another's message: gone from history and from a resume.
    al.send_json(json!({"type": "message", "text": "something awful", "ref": 5}));
    let awful = al.recv_type("ack")["seq"].as_u64().unwrap();
    assert!(mo.answered(json!({"type": "delete", "room": "lobby", "seq": awful}), "done"));
    assert_eq!(al.recv_type("deleted")["seq"], awful);
    let page =
        http_request(server.http, "GET", "/api/rooms/lobby/messages", &[&format!("Authorization: Bearer {moderator}")]);
    let page = body(&page);
    let stored = page["messages"].as_array().unwrap().iter().find(|m| m["seq"] == awful).unwrap().clone();
    assert_eq!((stored["text"].as_str(), stored["deleted"].as_bool()), (Some(""), Some(true)), "{stored}");
    assert!(!page.to_string().contains("awful") && !page.to_string().contains("oops"), "{page}");
    let late_token = format!("Bearer {}", token("la", json!({})));
    let mut late = connect_with(&format!("{url}?resume=lobby:0"), &[("Authorization", &late_token)]).unwrap();
    let mut replayed = vec![];
    while replayed.len() < 3 {
        let m = read_json(&mut late);
        if m["type"] == "message" {
            replayed.push(m);
        }
    }
    assert!(replayed.iter().all(|m| m["text"] != "something awful" && m["text"] != "oops"), "{replayed:?}");
    assert_eq!(replayed[2]["deleted"], true);

    // Mute in the lobby: messages and typing refused; nothing stored or relayed.
    assert!(mo.answered(
        json!({"type": "mute", "user": "al", "room": "lobby", "seconds": 60, "reason": "calm down"}),
        "done"
    ));
    al.send_json(json!({"type": "message", "text": "muted words", "ref": 6}));
    let e = al.recv_type("error");
    assert!(e["error"].as_str().unwrap().starts_with("you are muted until") && e["ref"] == 6, "{e}");
    al.send_json(json!({"type": "typing"}));
    assert!(al.recv_type("error")["error"].as_str().unwrap().contains("muted"));
    mo.say("after the mute");
    assert_eq!(mo.recv_type("message")["text"], "after the mute", "nothing of al's came first");
    let page = body(&http_request(
        server.http,
        "GET",
        "/api/rooms/lobby/messages",
        &[&format!("Authorization: Bearer {moderator}")],
    ));
    assert!(!page.to_string().contains("muted words"));

    // Outside its rooms, against a ban, against an admin: refused, nothing changes.
    for (request, says) in [
        (json!({"type": "mute", "user": "al", "room": "other", "seconds": 5, "reason": "x"}), "do not moderate"),
        (json!({"type": "mute", "user": "al", "seconds": 5, "reason": "x"}), "only an admin"),
        (json!({"type": "ban", "user": "al", "reason": "x"}), "only an admin"),
        (json!({"type": "kick", "user": "mo", "reason": "x"}), "yourself"),
        (json!({"type": "announce", "text": "hello all"}), "only an admin"),
        (json!({"type": "kick", "user": "nobody-here", "reason": "x"}), "not connected"),
        (json!({"type": "delete", "room": "lobby", "seq": 9999}), "no message"),
        (json!({"type": "kick", "reason": "x"}), "\"user\""),
    ] {
        mo.send_json(request.clone());
        let e = mo.recv_type("error");
        assert!(e["error"].as_str().unwrap().contains(says), "{request}: {e}");
    }
    let _admin = Client::signed_in(&url, &token("ad", json!({"roles": ["admin"]})));
    mo.send_json(json!({"type": "kick", "user": "ad", "reason": "x"}));
    assert!(mo.recv_type("error")["error"].as_str().unwrap().contains("cannot act on an admin"));
    al.send_json(json!({"type": "kick", "user": "mo", "reason": "x"}));
    assert!(al.recv_type("error")["error"].as_str().unwrap().contains("not a moderator"));

    // An announcement: a message from `~system`, stored and numbered.
    assert!(mo.answered(json!({"type": "announce", "room": "lobby", "text": "be nice"}), "done"));
    let m = al.recv_type("message");
    assert_eq!(
        (m["user"].as_str(), m["name"].as_str(), m["text"].as_str()),
        (Some("~system"), Some("system"), Some("be nice"))
    );
    // Kick: al is closed with 4003; the moderator stays.
    assert!(mo.answered(json!({"type": "kick", "name": "al", "reason": "enough"}), "done"));
    assert_eq!(u16::from(al.expect_close().unwrap().code), 4003);
}

#[test]
fn hostile_requests_to_the_admin_api_are_refused_and_change_nothing() {
    let server = TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.admin_token = Some(ADMIN.into());
        c.upgrade_rate = 2.0; // failed credentials spend this, as at the upgrade
    });
    let mut victim = Client::signed_in(&server.chat_url(), &token("vi", json!({})));
    victim.say("evidence");
    let seq = victim.recv_type("message")["seq"].as_u64().unwrap();
    let kick = json!({"user": "vi", "reason": "x"});
    let moderator = token("mo", json!({"roles": ["mod"], "mod_rooms": ["team-*"]}));
    let forged =
        jwt("another-secret-that-is-32-bytes-long!", json!({"sub": "ev", "exp": 4_000_000_000u64, "roles": ["admin"]}));
    let expired = token("ex", json!({"roles": ["admin"], "exp": 1}));
    let own_message = format!("/api/rooms/lobby/messages/{seq}");
    // (method, path, credential header, body, extra headers, the status it must get)
    type Case<'a> = (&'a str, &'a str, String, Option<Value>, Vec<&'a str>, u16);
    let cases: Vec<Case> = vec![
        ("POST", "/api/admin/kick", String::new(), Some(kick.clone()), vec![], 401),
        (
            "POST",
            "/api/admin/kick",
            "Authorization: Bearer wrong-token-0123456789".into(),
            Some(kick.clone()),
            vec![],
            401,
        ),
        ("POST", "/api/admin/kick", format!("Authorization: Bearer {forged}"), Some(kick.clone()), vec![], 401),
        ("POST", "/api/admin/kick", format!("Authorization: Bearer {expired}"), Some(kick.clone()), vec![], 401),
        (
            "POST",
            "/api/admin/kick",
            format!("Authorization: Bearer {}", token("pl", json!({}))),
            Some(kick.clone()),
            vec![],
            403,
        ),
        ("POST", "/api/admin/kick", format!("Authorization: Bearer {moderator}"), Some(kick.clone()), vec![], 403),
        ("POST", "/api/admin/ban", format!("Authorization: Bearer {moderator}"), Some(kick.clone()), vec![], 403),
        ("GET", "/api/admin/audit", format!("Authorization: Bearer {moderator}"), None, vec![], 403),
        ("DELETE", &own_message, format!("Authorization: Bearer {moderator}"), None, vec![], 403),
        (
            "POST",
            "/api/admin/kick",
            format!("Authorization: Bearer {ADMIN}"),
            Some(kick.clone()),
            vec!["Origin: http://evil.example"],
            403,
        ),
        (
            "POST",
            "/api/admin/ban",
            format!("Authorization: Bearer {ADMIN}"),
            Some(json!({"user": "vi", "seconds": 99_999_999_999u64, "reason": "x"})),
            vec![],
            400,
        ),
        (
            "POST",
            "/api/admin/mute",
            format!("Authorization: Bearer {ADMIN}"),
            Some(json!({"user": "vi", "seconds": -1, "reason": "x"})),
            vec![],
            400,
        ),
        (
            "POST",
            "/api/admin/kick",
            format!("Authorization: Bearer {ADMIN}"),
            Some(json!({"name": "nobody", "reason": "x"})),
            vec![],
            404,
        ),
        ("DELETE", "/api/rooms/lobby/messages/424242", format!("Authorization: Bearer {ADMIN}"), None, vec![], 404),
        ("DELETE", "/api/rooms/lobby/messages/abc", format!("Authorization: Bearer {ADMIN}"), None, vec![], 400),
        ("DELETE", "/api/admin/bans/12345", format!("Authorization: Bearer {ADMIN}"), None, vec![], 404),
        ("POST", "/api/admin/explode", format!("Authorization: Bearer {ADMIN}"), Some(json!({})), vec![], 404),
    ];
    for (method, path, auth, body_json, extra, want) in cases {
        let text = body_json.map(|b| b.to_string()).unwrap_or_default();
        let mut headers: Vec<&str> = extra.clone();
        if !auth.is_empty() {
            headers.push(&auth);
        }
        if !text.is_empty() {
            headers.push("Content-Type: application/json");
        }
        // From a fresh address each time past the first: failed credentials spend a budget.
        let r = http_request_from(Some(other_ip()), server.http, method, path, &headers, &text);
        assert_eq!(r.status, want, "{method} {path} {auth:.30}: {}", r.text());
        assert!(body(&r)["error"].is_string(), "every refusal says why: {}", r.text());
    }
    // Not JSON: 415 for another content type, 400 for a body that does not parse.
    let r = http_request_from(
        None,
        server.http,
        "POST",
        "/api/admin/kick",
        &[&format!("Authorization: Bearer {ADMIN}"), "Content-Type: text/plain"],
        "user=vi",
    );
    assert_eq!(r.status, 415);
    let r = http_request_from(
        None,
        server.http,
        "POST",
        "/api/admin/kick",
        &[&format!("Authorization: Bearer {ADMIN}"), "Content-Type: application/json"],
        "{not json",
    );
    assert_eq!(r.status, 400);
    // Guessing the token is throttled like any credential: 429 once the budget is spent.
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            call(server.http, "GET", "/api/admin/bans", "Authorization: Bearer guess-0123456789abcdef", None).status
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    // Nothing changed: the victim is connected and unmuted, its message intact, no bans.
    victim.say("still mine");
    assert_eq!(victim.recv_type("message")["text"], "still mine");
    let page = body(&http_request(
        server.http,
        "GET",
        "/api/rooms/lobby/messages",
        &[&format!("Authorization: Bearer {}", token("vi", json!({})))],
    ));
    assert_eq!(page["messages"][0]["text"], "evidence");
    assert_eq!(body(&admin_call(server.http, "GET", "/api/admin/bans", None))["bans"], json!([]));
    assert_eq!(body(&admin_call(server.http, "GET", "/api/admin/audit", None))["entries"], json!([]));
    assert!(metric(server.http, "threadchat_moderation_actions_total{action=\"refused\"}") >= 8);
}

#[test]
fn the_cli_bans_lists_unbans_and_purges_with_exit_codes() {
    let server = BinaryServer::start(&["--admin-token", ADMIN]);
    let url = format!("http://{}", server.http);
    let mut eve = Client::connect(&server.chat_url());
    eve.say("first");
    eve.say("second");
    eve.recv_type("message");
    eve.recv_type("message");
    let within = Duration::from_secs(20);
    let (code, out, err) =
        run_cli(&["admin", &url, "--admin-token", ADMIN, "ban", "--user", &eve.user, "--reason", "spam"], within);
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"].as_str().unwrap().to_string();
    let (code, out, _) = run_cli(&["admin", &url, "--admin-token", ADMIN, "bans"], within);
    assert_eq!(code, 0);
    assert!(out.contains(&eve.user), "{out}");
    let (code, out, _) = run_cli(&["admin", &url, "--admin-token", ADMIN, "purge-user", &eve.user], within);
    assert_eq!((code, serde_json::from_str::<Value>(&out).unwrap()["deleted"].as_u64()), (0, Some(2)), "{out}");
    let page = body(&http_get(server.http, "/api/rooms/lobby/messages"));
    assert!(page["messages"].as_array().unwrap().iter().all(|m| m["text"] == "" && m["deleted"] == true), "{page}");
    let (code, _, err) = run_cli(&["admin", &url, "--admin-token", "wrong-token-0123456789", "unban", &id], within);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, _) = run_cli(&["admin", &url, "--admin-token", ADMIN, "unban", &id], within);
    assert_eq!(code, 0);
    let (code, _, err) = run_cli(&["admin", &url, "--admin-token", ADMIN, "unban", &id], within);
    assert_eq!(code, 1, "a second unban finds nothing");
    assert!(err.contains("404"), "{err}");
    let (code, _, _) = run_cli(&["admin", &url, "kick", "--reason", "x"], within);
    assert_eq!(code, 2, "--user or --name is required");
    let (code, out, _) = run_cli(&["admin", &url, "--admin-token", ADMIN, "audit"], within);
    assert_eq!(code, 0);
    let actions: Vec<String> = serde_json::from_str::<Value>(&out).unwrap()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["unban", "purge", "ban"]);
}

#[test]
fn a_flood_of_admin_requests_from_one_address_is_cut_while_another_address_is_served() {
    let server = TestServer::with(|c| {
        c.admin_token = Some(ADMIN.into());
        c.message_rate = 2.0; // requests per second per address, in bursts of 4
    });
    let auth = format!("Authorization: Bearer {ADMIN}");
    let statuses: Vec<u16> =
        (0..10).map(|_| http_request(server.http, "GET", "/api/admin/bans", &[&auth]).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);
    let neighbour = http_request_from(Some(other_ip()), server.http, "GET", "/api/admin/bans", &[&auth], "");
    assert_eq!(neighbour.status, 200, "another address is still served");
}
