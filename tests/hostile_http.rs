//! The HTTP side as an attacker tries it: malformed API paths, requests that pose as
//! upgrades, the API without (or with someone else's) credentials, cross-site posts,
//! guessing floods, clients that never read their responses, a panicking handler,
//! dotfiles — each gets its documented status, and `/healthz` keeps answering others.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::entrance::rss_kib;
use crate::support::*;

const TOKEN: &str = "correct-horse-battery-staple";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// `/healthz` from another address, answered within 3 s.
fn healthz_answers(addr: SocketAddr) {
    let started = Instant::now();
    let r = http_request_from(Some(other_ip()), addr, "GET", "/healthz", &[], "");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3), "/healthz took {:?}", started.elapsed());
}

#[test]
fn malformed_history_paths_are_4xx_and_the_port_keeps_answering() {
    let server = BinaryServer::start_defaults(&[]);
    let paths = [
        "/api/rooms/messages",
        "/api/rooms//messages",
        "/api/rooms/%ZZ/messages",
        "/api/rooms/lobby/messages?after=9223372036854775808",
        "/api/rooms/lobby/messages?after=18446744073709551616",
        "/api/rooms/lobby/messages?after=-1",
        "/api/rooms/lobby/messages?limit=x",
    ];
    for round in 0..50 {
        for path in paths {
            let r = http_get(server.http, path);
            assert!((400..500).contains(&r.status), "round {round}: {path} -> {}", r.status);
        }
    }
    healthz_answers(server.http);
    assert_eq!(http_get(server.http, "/").status, 200);
    let r = http_get(server.http, "/api/rooms/lobby/messages?after=9223372036854775807");
    assert_eq!(r.status, 200, "the largest position is fine");
}

/// Raw UTF-8 in a request target (RFC 9112 wants it percent-encoded) is a `400` saying
/// so, at the HTTP side and at an upgrade, never a `500`; a neighbour is served meanwhile.
#[test]
fn raw_utf8_in_a_request_target_is_a_400() {
    let server = TestServer::start();
    for (target, upgrade) in [
        (&b"/caf\xc3\xa9"[..], false),
        (b"/?x=\xc3\xa9", false),
        (b"/api/rooms/\xef\xbd\x82/messages", false),
        (b"/ws?name=\xc3\xa9", true),
    ] {
        let mut s = tcp(server.http);
        let extra: &[u8] = if upgrade {
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        } else {
            b"Connection: close\r\n"
        };
        s.write_all(&[&b"GET "[..], target, b" HTTP/1.1\r\nHost: x\r\n", extra, b"\r\n"].concat()).unwrap();
        let mut raw = vec![];
        let _ = s.read_to_end(&mut raw);
        let r = parse_response(&raw);
        assert_eq!(r.status, 400, "{target:?}: {}", r.text());
        assert!(r.text().contains("not ASCII"), "{}", r.text());
        let ok = http_request_from(Some(other_ip()), server.http, "GET", "/healthz", &[], "");
        assert_eq!(ok.status, 200);
    }
}

#[test]
fn requests_posing_as_upgrades_are_answered_and_do_not_hold_the_port() {
    let server = BinaryServer::start_defaults(&[]);
    let body = r#"{"text":"held"}"#;
    let mut held: Vec<TcpStream> = vec![];
    for i in 0..12 {
        // Half say `Connection: Upgrade` alone (an HTTP request), half also `Upgrade:
        // websocket` (an upgrade to a path that has no WebSocket). Neither may hang.
        let upgrade = if i % 2 == 0 { "" } else { "Upgrade: websocket\r\n" };
        let local = IpAddr::from([127, 0, 4, 1 + i as u8]);
        let mut s = tcp_from(local, server.http).unwrap();
        write!(
            s,
            "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n{upgrade}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        held.push(s);
    }
    let started = Instant::now();
    for (i, s) in held.iter_mut().enumerate() {
        let mut head = [0u8; 64];
        let n = std::io::Read::read(s, &mut head).expect("an answer, not a timeout");
        let status = String::from_utf8_lossy(&head[..n]).into_owned();
        let expected = if i % 2 == 0 { "HTTP/1.1 201" } else { "HTTP/1.1 404" };
        assert!(status.starts_with(expected), "request {i}: {status}");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "answers took {:?}", started.elapsed());
    healthz_answers(server.http);
}

#[test]
fn the_api_needs_the_same_credentials_as_the_websocket() {
    let server = BinaryServer::start_defaults(&["--token", TOKEN]);
    let chat_routes = ["/api/rooms", "/api/rooms/lobby/messages"];
    for path in chat_routes {
        let r = http_get(server.http, path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        let wrong = http_request(server.http, "GET", path, &["Authorization: Bearer not-the-token-at-all"]);
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }
    let post = |headers: &[&str]| {
        let mut all = vec!["Content-Type: application/json"];
        all.extend_from_slice(headers);
        http_request_from(None, server.http, "POST", "/api/rooms/lobby/messages", &all, r#"{"text":"hi"}"#)
    };
    assert_eq!(post(&[]).status, 401);
    // The same credential in each of its places; the scheme in any case.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let lower = format!("Authorization: bearer {TOKEN}");
    let cookie = format!("Cookie: a=1; threadchat_token={TOKEN}");
    for path in chat_routes {
        for h in [&bearer, &lower, &cookie] {
            assert_eq!(http_request(server.http, "GET", path, &[h]).status, 200, "{path} {h}");
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(http_get(server.http, &format!("{path}{sep}token={TOKEN}")).status, 200);
    }
    assert_eq!(post(&[&bearer]).status, 201);
    // What stays open: health, readiness, metrics, the page and its config.
    for path in ["/healthz", "/readyz", "/metrics", "/", "/api/config"] {
        assert_eq!(http_get(server.http, path).status, 200, "{path}");
    }
    let text = http_get(server.http, "/metrics").text();
    assert!(text.contains("threadchat_refusals_total{reason=\"auth\"} 5"), "{text}");
}

#[test]
fn failed_authentication_and_api_posts_are_throttled_per_address() {
    let server = BinaryServer::start_defaults(&["--token", TOKEN]);
    // Wrong-token upgrades: the upgrade budget (10/s, bursts of 20) is spent before the
    // token is checked, so guessing gets 429 rather than endless 401s.
    let guesser = IpAddr::from([127, 0, 3, 1]);
    let url = format!("{}?token=guess-guess-guess-guess", server.chat_url());
    let statuses: Vec<u16> = (0..40).map(|_| refused_status(connect_from(Some(guesser), &url, &[]))).collect();
    assert!(statuses.contains(&401) && statuses.contains(&429), "{statuses:?}");
    // Over HTTP, from another address: the same budget.
    let http_guesser = IpAddr::from([127, 0, 3, 2]);
    let statuses: Vec<(u16, Option<String>)> = (0..40)
        .map(|_| {
            let r = http_request_from(
                Some(http_guesser),
                server.http,
                "GET",
                "/api/rooms",
                &["Authorization: Bearer guess"],
                "",
            );
            (r.status, r.header("Retry-After").map(str::to_string))
        })
        .collect();
    assert!(statuses.iter().any(|(s, _)| *s == 401), "{statuses:?}");
    assert!(statuses.iter().any(|(s, r)| *s == 429 && r.as_deref() == Some("1")), "{statuses:?}");
    // The right token from a fresh address is unaffected.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let r = http_request_from(Some([127, 0, 3, 3].into()), server.http, "GET", "/api/rooms", &[&bearer], "");
    assert_eq!(r.status, 200);
    // Tickets: at most 20 a second (bursts of 40) from one address.
    let statuses: Vec<u16> = (0..80)
        .map(|_| {
            http_request_from(Some([127, 0, 3, 4].into()), server.http, "POST", "/api/ticket", &[&bearer], "").status
        })
        .collect();
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
}

#[test]
fn a_login_name_belongs_to_its_login_over_http_and_websocket() {
    let server = TestServer::with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.token = Some(TOKEN.into());
    });
    let exp = threadchat::clock::now_ms() / 1000 + 600;
    let ada = format!("Authorization: Bearer {}", jwt(SECRET, json!({"sub": "u-ada", "name": "ada", "exp": exp})));
    let shared = format!("Authorization: Bearer {TOKEN}");
    let post = |auth: &str, body: serde_json::Value| {
        let headers = ["Content-Type: application/json", auth];
        http_request_from(None, server.http, "POST", "/api/rooms/lobby/messages", &headers, &body.to_string())
    };
    let r = post(&ada, json!({"text": "as someone else", "name": "bob"}));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post(&ada, json!({"text": "as myself"}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["name"], "ada");
    // The shared token may not take ada's name, in any case, over HTTP or WebSocket.
    for name in ["ada", "Ada", "ADA"] {
        assert_eq!(post(&shared, json!({"text": "impostor", "name": name})).status, 403, "{name}");
    }
    assert_eq!(post(&shared, json!({"text": "fine", "name": "carol"})).status, 201);
    let mut c = Client::connect(&format!("{}?token={TOKEN}", server.chat_url()));
    c.send_json(json!({"type": "name", "name": "Ada"}));
    let e = c.recv_type("error");
    assert!(e["error"].as_str().unwrap().contains("belongs to someone else"), "{e}");
    // A JWT that is not valid yet (nbf in the future) is refused.
    let later = jwt(SECRET, json!({"sub": "u-dan", "name": "dan", "exp": exp, "nbf": exp - 60}));
    let r = http_request(server.http, "GET", "/api/rooms", &[&format!("Authorization: Bearer {later}")]);
    assert_eq!(r.status, 401);
}

#[test]
fn cross_site_posts_are_refused_and_nothing_is_stored() {
    let server = TestServer::start();
    let own = format!("Origin: http://127.0.0.1:{}", server.http.port());
    let post = |headers: &[&str], body: &str| {
        http_request_from(None, server.http, "POST", "/api/rooms/lobby/messages", headers, body)
    };
    // What a form on another site can send: a foreign Origin, a simple content type.
    let r = post(&["Origin: https://evil.example", "Content-Type: text/plain"], r#"{"text":"csrf"}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post(&["Origin: https://evil.example", "Content-Type: application/json"], r#"{"text":"csrf"}"#);
    assert_eq!(r.status, 403);
    // Not JSON, even from our own page or a tool: 415.
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = post(&[&own, &format!("Content-Type: {ct}")], r#"{"text":"csrf"}"#);
        assert_eq!(r.status, 415, "{ct}");
    }
    assert_eq!(post(&[], r#"{"text":"csrf"}"#).status, 415, "no content type");
    let r = post(&[&own, "Content-Type: application/json; charset=utf-8"], r#"{"text":"legit"}"#);
    assert_eq!(r.status, 201);
    let history = http_get(server.http, "/api/rooms/lobby/messages");
    let texts: Vec<String> = serde_json::from_slice::<serde_json::Value>(&history.body).unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["legit"]);
    // Tickets are state-changing too.
    let r = http_request(server.http, "POST", "/api/ticket", &["Origin: https://evil.example"]);
    assert_eq!(r.status, 403);
}

/// A socket with a tiny receive window (as a slow mobile client has), from `local`.
fn slow_reader(local: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.bind(&SocketAddr::new(local, 0).into()).unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    let s: TcpStream = socket.into();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

#[test]
fn clients_that_never_read_their_responses_cost_bounded_memory_and_block_nobody() {
    let server = BinaryServer::start(&["--handshake-timeout-secs", "30"]);
    // About 1.2 MB of history, so a page of it is as big as a page gets (1 MiB).
    let mut writer = Client::connect(&server.chat_url());
    let text = "x".repeat(4000);
    for _ in 0..300 {
        writer.say(&text);
    }
    wait_until("300 messages stored", || {
        let r = http_get(server.http, "/api/rooms/lobby/messages?after=299");
        r.text().contains("\"seq\":300")
    });
    let page = http_get(server.http, "/api/rooms/lobby/messages?limit=1000");
    assert!(page.body.len() > 900_000 && page.body.len() < 1_200_000, "{}", page.body.len());
    let pid = server.pid();
    let before = rss_kib(pid);
    let mut hogs = vec![];
    // 16 clients ask for the big page and never read it.
    for i in 0..16 {
        let mut s = slow_reader([127, 0, 5, 1 + (i % 4) as u8].into(), server.http);
        s.write_all(b"GET /api/rooms/lobby/messages?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        hogs.push(s);
    }
    // 50 clients pipeline requests for the page and never read.
    let many = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(500);
    for i in 0..50 {
        let mut s = slow_reader([127, 0, 6, 1 + (i % 5) as u8].into(), server.http);
        let _ = s.write_all(many.as_bytes()); // the server stops reading once it is blocked
        hogs.push(s);
    }
    for _ in 0..3 {
        healthz_answers(server.http);
    }
    let mut c = Client::connect_from(Some(other_ip()), &server.chat_url());
    c.say("still here");
    assert_eq!(c.recv_type("message")["text"], "still here");
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB for 66 clients that do not read");
}

#[test]
fn a_panicking_handler_answers_500_and_the_port_carries_on() {
    let server = TestServer::with(|c| c.hooks.panic_on_path = Some("/api/boom".into()));
    // More panics than there are HTTP worker threads.
    for _ in 0..12 {
        let r = http_get(server.http, "/api/boom");
        assert_eq!(r.status, 500);
    }
    healthz_answers(server.http);
    let mut c = server.chat();
    c.say("unaffected");
    assert_eq!(c.recv_type("message")["text"], "unaffected");
    assert_eq!(http_get(server.http, "/api/rooms").status, 200);
}

#[test]
fn dotfiles_are_not_served_and_pages_carry_the_security_headers() {
    let root = TempDir::new();
    std::fs::write(root.0.join("index.html"), "<!doctype html><p>hi</p>").unwrap();
    std::fs::write(root.0.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(root.0.join(".git")).unwrap();
    std::fs::write(root.0.join(".git/config"), "[core]").unwrap();
    std::fs::create_dir_all(root.0.join("sub")).unwrap();
    std::fs::write(root.0.join("sub/.htpasswd"), "x").unwrap();
    let dir = root.0.clone();
    let server = TestServer::with(move |c| c.static_dir = Some(dir));
    for path in ["/.env", "/.git/config", "/%2egit/config", "/sub/.htpasswd", "/.git/"] {
        let r = http_get(server.http, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("SECRET") && !r.text().contains("[core]"));
    }
    let page = http_get(server.http, "/");
    assert_eq!(page.status, 200);
    let csp = page.header("Content-Security-Policy").expect("a CSP on pages");
    for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    for path in ["/api/rooms", "/healthz", "/nope"] {
        assert_eq!(http_get(server.http, path).header("X-Content-Type-Options"), Some("nosniff"), "{path}");
    }
}

/// `GET /api/identity` answers whether a guest identity is ours; guessing at it spends the
/// address's attempt budget like a wrong credential (429), and a neighbour's check is
/// answered meanwhile.
#[test]
fn guessing_identities_is_throttled_per_address() {
    let server = TestServer::with(|c| c.upgrade_rate = 10.0);
    let good = server.chat().identity.unwrap();
    let statuses: Vec<u16> = (0..40)
        .map(|i| {
            let path = format!("/api/identity?identity=guest~{i:024x}.AAAA");
            http_request_from(Some([127, 0, 3, 5].into()), server.http, "GET", &path, &[], "").status
        })
        .collect();
    assert!(statuses.contains(&401) && statuses.contains(&429), "{statuses:?}");
    let neighbour =
        http_request_from(Some(other_ip()), server.http, "GET", &format!("/api/identity?identity={good}"), &[], "");
    assert_eq!(neighbour.status, 200, "{}", neighbour.text());
}
