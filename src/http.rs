//! The HTTP side: a blocking tiny_http server answering the chat page, `/healthz` and the
//! JSON API. A few worker threads share one `tiny_http::Server` and each loops on `recv()`.
//!
//! WebSockets do not live here: an upgrade attempted on this port gets `426` naming the
//! WebSocket address, because the upgrade is the WebSocket listener's job.

use std::io::Cursor;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::server::Shared;

type HttpResponse = Response<Cursor<Vec<u8>>>;

/// The page, built into the binary so `cargo run` (or a copied binary) serves it from any
/// working directory. `--static-dir` serves a directory on disk instead.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../static/index.html")),
    ("app.js", include_bytes!("../static/app.js")),
    ("style.css", include_bytes!("../static/style.css")),
    ("stats.html", include_bytes!("../static/stats.html")),
    ("stats.js", include_bytes!("../static/stats.js")),
];

pub fn spawn_worker(
    index: usize,
    server: Arc<tiny_http::Server>,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("http-{index}")).stack_size(256 * 1024).spawn(move || {
        loop {
            let mut request = match server.recv() {
                Ok(request) => request,
                // Err is either our own `unblock()` at shutdown or an accept error
                // tiny_http passes along (out of fds, say).
                Err(_) if shared.is_shutting_down() => return,
                Err(e) => {
                    log::error!("http accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            if shared.is_shutting_down() {
                let _ = request.respond(text(503, "shutting down\n"));
                continue;
            }
            let method = request.method().clone();
            let url = request.url().to_string();
            let response = route(&mut request, &shared);
            let status = response.status_code().0;
            if let Err(e) = request.respond(response) {
                log::debug!("http {method} {url}: client went away: {e}");
            } else {
                log::debug!("http {method} {url} -> {status}");
            }
        }
    })
}

fn route(request: &mut Request, shared: &Shared) -> HttpResponse {
    if is_websocket_upgrade(request) {
        let ws = ws_url(request, shared);
        return text(426, &format!("WebSockets are served on a separate port: {ws}\n"))
            .with_header(header("Upgrade", "websocket"));
    }
    let url = request.url().to_string();
    let path = url.split(['?', '#']).next().unwrap_or("/");
    match (request.method(), path) {
        (Method::Get | Method::Head, "/healthz") => text(200, "ok\n"),
        (Method::Get | Method::Head, "/api/config") => {
            let body = serde_json::json!({
                // "token": the page must get a ticket (POST /api/ticket) before connecting.
                "auth": if shared.config.auth_required() { serde_json::json!("token") } else { serde_json::Value::Null },
                "ws_url": ws_url(request, shared),
                "max_message_bytes": shared.config.max_message_bytes,
                "max_text_chars": crate::protocol::MAX_TEXT_CHARS,
            });
            json(200, &body)
        }
        (Method::Get | Method::Head, "/metrics") => {
            Response::from_data(shared.metrics.render(&shared.gauges()).into_bytes())
                .with_status_code(200)
                .with_header(header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"))
        }
        (Method::Get | Method::Head, "/api/stats") => {
            let body = serde_json::json!({
                "interval_secs": crate::metrics::SAMPLE_INTERVAL.as_secs(),
                "samples": shared.metrics.history(),
            });
            json(200, &body).with_header(header("Cache-Control", "no-store"))
        }
        (Method::Post, "/api/ticket") => issue_ticket(request, shared),
        (Method::Get | Method::Head, "/api/rooms") => json(200, &serde_json::json!({ "rooms": shared.hub.rooms() })),
        (method, _) if path.starts_with("/api/rooms/") && path.ends_with("/messages") => {
            let room = &path["/api/rooms/".len()..path.len() - "/messages".len()];
            if let Err(e) = crate::protocol::validate_room(room) {
                return json(400, &serde_json::json!({ "error": e }));
            }
            match method {
                Method::Get | Method::Head => room_history(room, &url, shared),
                Method::Post => post_message(room, request, shared),
                _ => text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD, POST")),
            }
        }
        (Method::Get | Method::Head, _) if path.starts_with("/api/") => {
            json(404, &serde_json::json!({"error": "no such API endpoint"}))
        }
        (Method::Get | Method::Head, _) => static_file(path, shared),
        _ => text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD")),
    }
}

/// `POST /api/ticket` (authenticated with the token or a JWT, as `Authorization: Bearer` or
/// the `threadchat_token` cookie): a one-time ticket for one WebSocket upgrade, valid 30 s, from
/// this address only.
fn issue_ticket(request: &Request, shared: &Shared) -> HttpResponse {
    let cfg = &shared.config;
    if !cfg.auth_required() {
        return json(404, &serde_json::json!({ "error": "authentication is not enabled on this server" }));
    }
    let given =
        crate::guard::token_from("", request_header(request, "Authorization"), request_header(request, "Cookie"));
    let Some(identity) =
        given.and_then(|g| crate::guard::authenticate(&g, cfg.token.as_deref(), cfg.jwt_secret.as_deref()))
    else {
        return json(401, &serde_json::json!({ "error": "missing or wrong credentials" }))
            .with_header(header("WWW-Authenticate", "Bearer"));
    };
    // A ticket bought with a JWT carries its name to the socket.
    let name = match identity {
        crate::guard::Identity::Named(name) => Some(name),
        crate::guard::Identity::Anonymous => None,
    };
    let Some(ip) = request.remote_addr().map(|a| a.ip()) else {
        return json(400, &serde_json::json!({ "error": "no peer address" }));
    };
    match shared.tickets.issue(ip, name) {
        Some(ticket) => {
            json(200, &serde_json::json!({ "ticket": ticket, "expires_in": crate::guard::TICKET_TTL.as_secs() }))
                .with_header(header("Cache-Control", "no-store"))
        }
        None => json(503, &serde_json::json!({ "error": "too many outstanding tickets" })),
    }
}

fn request_header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str())
}

/// Longest history page `GET /api/rooms/{room}/messages` returns.
const MAX_HISTORY_PAGE: usize = 1000;
/// Largest `POST` body accepted.
const MAX_POST_BYTES: u64 = 64 * 1024;
/// How long a `POST` waits for its message to be stored.
const POST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /api/rooms/{room}/messages?after=SEQ&limit=N`: stored messages, oldest first.
fn room_history(room: &str, url: &str, shared: &Shared) -> HttpResponse {
    let mut after = 0u64;
    let mut limit = 100usize;
    for (key, value) in url.split_once('?').map(|(_, q)| q).unwrap_or("").split('&').filter_map(|kv| kv.split_once('='))
    {
        let parsed = match key {
            "after" => value.parse().map(|v| after = v).is_ok(),
            "limit" => value.parse().map(|v: usize| limit = v.clamp(1, MAX_HISTORY_PAGE)).is_ok(),
            _ => true,
        };
        if !parsed {
            return json(400, &serde_json::json!({ "error": format!("{key} must be a non-negative integer") }));
        }
    }
    match shared.store.range(room, after, limit) {
        Ok(messages) => json(200, &serde_json::json!({ "room": room, "messages": messages })),
        Err(e) => {
            log::error!("history read failed: {e}");
            json(503, &serde_json::json!({ "error": "history store unavailable" }))
        }
    }
}

/// `POST /api/rooms/{room}/messages` with `{"text":…, "name":…}`: stores and broadcasts a
/// message as a WebSocket client's would be; answers `201 {"room","seq",…}` once stored.
fn post_message(room: &str, request: &mut Request, shared: &Shared) -> HttpResponse {
    if request.body_length().is_some_and(|n| n as u64 > MAX_POST_BYTES) {
        return json(413, &serde_json::json!({ "error": "body too large" }));
    }
    let mut body = Vec::new();
    if std::io::Read::read_to_end(&mut std::io::Read::take(request.as_reader(), MAX_POST_BYTES + 1), &mut body).is_err()
        || body.len() as u64 > MAX_POST_BYTES
    {
        return json(400, &serde_json::json!({ "error": "could not read the body" }));
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => return json(400, &serde_json::json!({ "error": "body must be a JSON object" })),
    };
    let msg = serde_json::json!({ "type": "message", "room": room, "text": value.get("text") });
    let text = match crate::protocol::parse_client(&msg.to_string()) {
        Ok(crate::protocol::ClientMsg::Message { text, .. }) => text,
        Ok(_) => unreachable!("built as a message"),
        Err(e) => return json(400, &serde_json::json!({ "error": e })),
    };
    let name = match value.get("name") {
        None => "http".to_string(),
        Some(serde_json::Value::String(n)) => match crate::protocol::validate_name(n) {
            Ok(()) => n.clone(),
            Err(e) => return json(400, &serde_json::json!({ "error": e })),
        },
        Some(_) => return json(400, &serde_json::json!({ "error": "\"name\" must be a string" })),
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let submit = crate::sequencer::Submit {
        room: room.to_string(),
        id: shared.hub.next_id(),
        name: std::sync::Arc::from(name),
        text,
        reply: crate::sequencer::Reply::Http(tx),
    };
    if let Err(e) = shared.sequencer.submit(submit) {
        return json(503, &serde_json::json!({ "error": e }));
    }
    match rx.recv_timeout(POST_TIMEOUT) {
        Ok(Ok(m)) => json(201, &serde_json::to_value(&m).unwrap_or_default()),
        Ok(Err(e)) => json(503, &serde_json::json!({ "error": e })),
        Err(_) => json(503, &serde_json::json!({ "error": "timed out waiting for the history store" })),
    }
}

fn is_websocket_upgrade(request: &Request) -> bool {
    request.headers().iter().any(|h| h.field.equiv("Upgrade") && h.value.as_str().eq_ignore_ascii_case("websocket"))
}

/// The chat URL the page should connect to: `--public-ws-url` if given, otherwise the host
/// the browser used for this page with the WebSocket listener's port.
fn ws_url(request: &Request, shared: &Shared) -> String {
    if let Some(url) = &shared.config.public_ws_url {
        return url.clone();
    }
    let port = shared.ws_addr.port();
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| host_without_port(h.value.as_str()))
        .filter(|h| is_plausible_host(h))
        .unwrap_or_else(|| shared.ws_addr.ip().to_string());
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    format!("ws://{host}:{port}/ws")
}

fn host_without_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h).to_string()
}

/// A Host header is client input that ends up in a URL we hand back: accept only host-name
/// characters so it cannot inject anything.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

/// Serves `url_path` from the static directory (or the embedded copy). Returns 404 for
/// anything that is not a plain relative path: `..`, `.`, backslashes, NUL, or any of these
/// percent-encoded.
fn static_file(url_path: &str, shared: &Shared) -> HttpResponse {
    let Some(rel) = safe_relative_path(url_path) else {
        return not_found();
    };
    let body = match &shared.config.static_dir {
        None => {
            let name = rel.to_str().unwrap_or_default();
            match EMBEDDED.iter().find(|(n, _)| *n == name) {
                Some((_, bytes)) => bytes.to_vec(),
                None => return not_found(),
            }
        }
        Some(dir) => {
            let full = dir.join(&rel);
            // Symlinks inside the directory could still point out of it: check where the
            // file really is.
            match (full.canonicalize(), dir.canonicalize()) {
                (Ok(real), Ok(root)) if real.starts_with(&root) && real.is_file() => match std::fs::read(&real) {
                    Ok(bytes) => bytes,
                    Err(_) => return not_found(),
                },
                _ => return not_found(),
            }
        }
    };
    Response::from_data(body)
        .with_status_code(200)
        .with_header(header("Content-Type", content_type(&rel)))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Cache-Control", "no-cache"))
}

/// Decodes the URL path and checks every segment; `/` means `index.html`.
pub fn safe_relative_path(url_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(url_path)?;
    let trimmed = decoded.strip_prefix('/')?;
    let rel = if trimmed.is_empty() { "index.html" } else { trimmed };
    if rel.contains(['\\', '\0']) || rel.ends_with('/') {
        return None;
    }
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_)))
        || rel.split('/').any(|s| s.is_empty() || s == "." || s == "..")
    {
        return None;
    }
    Some(path.to_path_buf())
}

/// Percent-decodes once. Invalid escapes or a result that is not UTF-8 → None (404).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    // A second layer of encoding (%252e) decodes to "%2e": refuse rather than guess.
    if decoded.contains('%') {
        return None;
    }
    Some(decoded)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn header(name: &str, value: &str) -> Header {
    // Only called with ASCII names and values from this file: cannot fail.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn text(status: u16, body: &str) -> HttpResponse {
    Response::from_data(body.as_bytes().to_vec())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    Response::from_data(value.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

fn not_found() -> HttpResponse {
    text(404, "not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        assert_eq!(safe_relative_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(safe_relative_path("/app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(safe_relative_path("/img/a%20b.png"), Some(PathBuf::from("img/a b.png")));
    }

    #[test]
    fn rejects_traversal_in_every_spelling() {
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/..%2fetc/passwd",
            "/%252e%252e/etc/passwd",
            "/..\\etc\\passwd",
            "/.%2e/x",
            "/./index.html",
            "//etc/passwd",
            "/a//b",
            "/x%00.html",
            "/%zz",
            "/%c0%ae%c0%ae/x",
            "/dir/",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_header_is_sanitized() {
        assert_eq!(host_without_port("example.com:3000"), "example.com");
        assert_eq!(host_without_port("[::1]:3000"), "[::1]");
        assert!(!is_plausible_host("evil.com/\"><script>"));
        assert!(is_plausible_host("chat.example.org"));
    }
}
