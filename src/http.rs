//! The HTTP side: a blocking tiny_http server answering the chat page, `/healthz` and the
//! JSON API. A few worker threads share one `tiny_http::Server` and each loops on `recv()`.
//!
//! tiny_http listens on a private Unix socket, not on the public port: the front thread
//! (`front.rs`) owns that, and forwards only complete requests that passed its limits, with
//! the client's real address in a header. If tiny_http's accept thread ever stops (it does so
//! at its first accept error), a worker starts a new tiny_http server on the same socket.
//!
//! WebSockets do not live here: an upgrade attempted on this port gets `426` naming the
//! WebSocket address, because the upgrade is the WebSocket listener's job.

use std::io::Cursor;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

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

/// How often an idle worker looks whether tiny_http was restarted (and at the shutdown flag).
const WORKER_POLL: Duration = Duration::from_secs(1);

/// The tiny_http server the workers take requests from, and its Unix socket in a private
/// directory (mode 0700: only this user can reach tiny_http without passing the front,
/// which is what makes the peer header trustworthy). The directory is removed on drop.
pub struct Workers {
    /// The server and its socket. Replaced when tiny_http's accept thread has stopped, on a
    /// new path each time: a dropped tiny_http server deletes its socket file.
    current: Mutex<(Arc<tiny_http::Server>, PathBuf)>,
    /// Restarts so far; names the next socket.
    restarts: AtomicUsize,
    dir: PathBuf,
}

impl Workers {
    pub fn start() -> std::io::Result<Workers> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "threadchat-{}-{}-{nanos}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("http-0.sock");
        let server = match listen(&socket) {
            Ok(server) => server,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Workers { current: Mutex::new((Arc::new(server), socket)), restarts: AtomicUsize::new(0), dir })
    }

    /// Connects to tiny_http for the front (non-blocking), restarting it if it is gone.
    pub fn connect(&self) -> std::io::Result<mio::net::UnixStream> {
        let socket = self.current.lock().1.clone();
        match mio::net::UnixStream::connect(&socket) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                log::error!("http: tiny_http is not accepting; restarting it");
                if !self.restart(None) {
                    return Err(e);
                }
                let socket = self.current.lock().1.clone();
                mio::net::UnixStream::connect(&socket)
            }
            other => other,
        }
    }

    fn current(&self) -> Arc<tiny_http::Server> {
        Arc::clone(&self.current.lock().0)
    }

    /// Replaces `failed` (`None`: the current server) with a new tiny_http server, unless
    /// someone already did. Returns false if that failed (out of fds, say); retry later.
    ///
    /// Two ways tiny_http's accept thread can stop: it hands its workers the accept error
    /// and exits (a worker then calls this), or it panics — under fd exhaustion it unwraps a
    /// failed `try_clone` — and says nothing; the front then finds the socket refusing
    /// connections and calls this.
    pub fn restart(&self, failed: Option<&Arc<tiny_http::Server>>) -> bool {
        let mut current = self.current.lock();
        if failed.is_some_and(|f| !Arc::ptr_eq(&current.0, f)) {
            return true;
        }
        let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        let socket = self.dir.join(format!("http-{n}.sock"));
        match listen(&socket) {
            Ok(server) => {
                log::warn!("http: tiny_http restarted");
                *current = (Arc::new(server), socket);
                true
            }
            Err(e) => {
                log::debug!("http: cannot restart tiny_http yet: {e}");
                false
            }
        }
    }

    /// Wakes up to `n` workers blocked in `recv` (at shutdown).
    pub fn unblock(&self, n: usize) {
        let server = self.current();
        for _ in 0..n {
            server.unblock();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listen(socket: &Path) -> std::io::Result<tiny_http::Server> {
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    tiny_http::Server::from_listener(listener, None).map_err(|e| std::io::Error::other(e.to_string()))
}

pub fn spawn_worker(index: usize, workers: Arc<Workers>, shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("http-{index}")).stack_size(256 * 1024).spawn(move || {
        while !shared.is_shutting_down() {
            let server = workers.current();
            let mut request = match server.recv_timeout(WORKER_POLL) {
                Ok(Some(request)) => request,
                // Timed out, or our own `unblock()` at shutdown: check the flag.
                Ok(None) => continue,
                // tiny_http passes along the accept error that stopped its accept thread.
                Err(e) => {
                    log::error!("http: tiny_http stopped accepting ({e}); restarting it");
                    while !workers.restart(Some(&server)) && !shared.is_shutting_down() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
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

/// The client's address, as the front recorded it.
pub(crate) fn peer_ip(request: &Request) -> Option<IpAddr> {
    request_header(request, crate::front::PEER_HEADER)
        .and_then(|v| v.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip())
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
        // Readiness (for a load balancer): with --redis, only while the backplane is
        // connected and caught up; without, always.
        (Method::Get | Method::Head, "/readyz") => match shared.backplane.as_deref().map(|b| b.ready()) {
            Some(Err(why)) => text(503, &format!("{why}\n")),
            _ if shared.is_shutting_down() => text(503, "shutting down\n"),
            _ => text(200, "ready\n"),
        },
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
    let Some(ip) = peer_ip(request) else {
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
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    format!("{scheme}://{host}:{port}/ws")
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
