//! The routes tiny_http's workers answer: the page, health checks, metrics, and the JSON API.
//!
//! Access rules, the same as at the WebSocket upgrade (see docs/security.md):
//! - With `--token`/`--jwt-secret`, every route that reads or writes chat (rooms, history,
//!   posting) needs the credential (`Authorization: Bearer`, the `threadchat_token` cookie,
//!   or `?token=`): `401` otherwise. Each failed attempt spends the address's upgrade budget,
//!   so guessing is as slow over HTTP as over WebSocket (`429` when it is spent).
//! - State-changing routes (`POST`) refuse a browser page from a foreign origin (`403`) and a
//!   body that is not JSON (`415`): together they stop cross-site form posts (CSRF), since a
//!   form can send neither an allowed `Origin` nor `application/json`.
//! - `POST`s are rate-limited per address (`429` with `Retry-After`).
//! - A JWT's name is its holder's alone: a post under another JWT user's name is `403`.
//! - `/healthz`, `/readyz`, `/metrics`, `/api/config`, `/api/stats` and the page stay open.

use tiny_http::{Method, Request, Response};

use crate::net::access::auth::{Identity, RoomAccess};
use crate::net::access::history_rate::HistoryBudget;
use crate::net::access::tickets::NoTicket;
use crate::net::http::messages;
use crate::net::http::respond::{
    HttpResponse, header, json, peer_ip, refuse_credential, refuse_cross_site, refuse_over_rate, request_header, text,
};
use crate::net::shared::Shared;

pub fn route(request: &mut Request, shared: &Shared) -> HttpResponse {
    let url = request.url().to_string();
    let path = url.split(['?', '#']).next().unwrap_or("/").to_string();
    let query = url.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or("")).to_string();
    shared.chat.config.hooks.panic_on_path(&path);
    if let Some(answer) = crate::net::http::admin::route(request, shared, &path, &query) {
        return answer;
    }
    let history_room = path.strip_prefix("/api/rooms/").and_then(|r| r.strip_suffix("/messages")).map(str::to_string);
    let method = request.method().clone();
    let get = matches!(method, Method::Get | Method::Head);
    match path.as_str() {
        "/healthz" if get => text(200, "ok\n"),
        // Readiness (for a load balancer): with --redis, only while the backplane is
        // connected and caught up; without, always.
        "/readyz" if get => match shared.chat.backplane.as_deref().map(|b| b.ready()) {
            Some(Err(why)) => text(503, &format!("{why}\n")),
            _ if shared.is_shutting_down() => text(503, "shutting down\n"),
            _ => text(200, "ready\n"),
        },
        "/api/config" if get => {
            let body = serde_json::json!({
                // "token": the page must get a ticket (POST /api/ticket) before connecting.
                "auth": if shared.chat.config.auth_required() { serde_json::json!("token") } else { serde_json::Value::Null },
                "ws_url": ws_url(request, shared),
                "max_message_bytes": shared.chat.config.max_message_bytes,
                "max_text_chars": crate::chat::protocol::MAX_TEXT_CHARS,
            });
            json(200, &body).with_header(header("Cache-Control", "no-store"))
        }
        "/metrics" if get => Response::from_data(shared.chat.metrics.render(&shared.gauges()).into_bytes())
            .with_status_code(200)
            .with_header(header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")),
        "/api/stats" if get => {
            let body = serde_json::json!({
                "interval_secs": crate::metrics::SAMPLE_INTERVAL.as_secs(),
                "samples": shared.chat.metrics.history(),
            });
            json(200, &body).with_header(header("Cache-Control", "no-store"))
        }
        // Whether this server still knows a guest identity (the page asks when a connection
        // with one is refused before it opens: a changed key makes it a new guest).
        "/api/identity" if get => {
            match crate::net::access::identity::offered(&query, request_header(request, "Cookie")) {
                None => json(
                    400,
                    &serde_json::json!({ "error": "no identity: give ?identity= or the threadchat_identity cookie" }),
                ),
                Some(credential) => match shared.guest_keys.verify(&credential) {
                    Some(user) => json(200, &serde_json::json!({ "user": user })),
                    // A wrong guess costs what a failed sign-in costs.
                    None => refuse_credential(request, shared, crate::net::access::identity::BAD_IDENTITY),
                },
            }
        }
        "/api/ticket" if method == Method::Post => {
            guarded_post(request, shared, &query).unwrap_or_else(|identity| issue_ticket(request, shared, identity))
        }
        "/api/rooms" if get => match caller(request, shared, &query) {
            // Serialized straight from the listing: a `Value` tree of 10,000 rooms first
            // would double the work.
            Ok(identity) => {
                #[derive(serde::Serialize)]
                struct Rooms {
                    rooms: Vec<crate::chat::room_index::RoomSummary>,
                }
                // Only the rooms the caller may enter: a private room's name and counts
                // are not for everyone.
                let access = RoomAccess::of(&identity);
                let private = &shared.chat.config.private_rooms;
                let mut rooms = shared.chat.hub.rooms();
                rooms.retain(|r| access.may_enter(&r.room, private));
                let body = serde_json::to_vec(&Rooms { rooms }).unwrap_or_default();
                Response::from_data(body).with_status_code(200).with_header(header("Content-Type", "application/json"))
            }
            Err(refusal) => refusal,
        },
        _ if history_room.is_some() => {
            let room = history_room.as_deref().unwrap_or_default();
            if let Err(e) = crate::chat::protocol::validate_room(room) {
                return json(400, &serde_json::json!({ "error": e }));
            }
            match method {
                Method::Get | Method::Head => match caller(request, shared, &query) {
                    Ok(identity) if !may_enter(&identity, room, shared) => room_closed(),
                    Ok(_) => {
                        messages::room_history(room, &query, shared, &HistoryBudget::new(shared, client_ip(request)))
                    }
                    Err(refusal) => refusal,
                },
                Method::Post => match guarded_post(request, shared, &query) {
                    Ok(refusal) => refusal,
                    Err(identity) if !may_enter(&identity, room, shared) => room_closed(),
                    Err(identity) => messages::post_message(room, request, shared, identity),
                },
                _ => text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD, POST")),
            }
        }
        // A browser (or curl) that opens a WebSocket URL as a page.
        "/ws" | "/echo" => text(426, "this is a WebSocket endpoint: connect with a WebSocket client\n")
            .with_header(header("Upgrade", "websocket")),
        _ if path.starts_with("/api/") && get => json(404, &serde_json::json!({"error": "no such API endpoint"})),
        _ if get => static_file(&path, request, shared),
        _ => text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD")),
    }
}

/// Who is asking, for a route that reads or writes chat: `Ok` if allowed (anonymous when
/// the server has no authentication), else the `401`/`429` to answer.
fn caller(request: &Request, shared: &Shared, query: &str) -> Result<Identity, HttpResponse> {
    let identity = authenticated(request, shared, query)?;
    // A banned user or address is refused here as at the upgrade (a guest's identity is
    // checked where a post reads it, `messages::poster`).
    let user = match &identity {
        Identity::Named { user, .. } => Some(user.as_str()),
        Identity::Anonymous => None,
    };
    let admin = matches!(&identity, Identity::Named { role: crate::chat::moderation::Role::Admin, .. });
    if let Some(why) = shared.chat.moderation.ban_of(user, Some(client_ip(request)), admin) {
        return Err(json(403, &serde_json::json!({ "error": why })));
    }
    Ok(identity)
}

/// The credential's identity (anonymous when the server has no authentication), else the
/// `401`/`429` to answer.
fn authenticated(request: &Request, shared: &Shared, query: &str) -> Result<Identity, HttpResponse> {
    let cfg = &shared.chat.config;
    if !cfg.auth_required() {
        return Ok(Identity::Anonymous);
    }
    let given = crate::net::access::auth::token_from(
        query,
        request_header(request, "Authorization"),
        request_header(request, "Cookie"),
    );
    if let Some(identity) =
        given.and_then(|g| crate::net::access::auth::authenticate(&g, cfg.token.as_deref(), cfg.jwt_secret.as_deref()))
    {
        return Ok(identity);
    }
    // A failed attempt costs what an upgrade attempt costs: guessing stays slow everywhere.
    Err(refuse_credential(request, shared, "missing or wrong credentials"))
}

/// The checks every `POST` passes, cheapest first: origin (403), content type (415),
/// credentials (401/429), the address's rate (429). `Err(identity)`: go ahead (the inverted
/// `Result` keeps the refusal, the common early exit, in `Ok`).
fn guarded_post(request: &Request, shared: &Shared, query: &str) -> Result<HttpResponse, Identity> {
    if let Some(refusal) = refuse_cross_site(request, shared) {
        return Ok(refusal);
    }
    let identity = match caller(request, shared, query) {
        Ok(identity) => identity,
        Err(refusal) => return Ok(refusal),
    };
    match refuse_over_rate(request, shared) {
        Some(refusal) => Ok(refusal),
        None => Err(identity),
    }
}

/// The address per-address budgets count a request against (set by the connection thread,
/// after `--trusted-proxy`); unspecified if missing, which only a bug could cause.
fn client_ip(request: &Request) -> std::net::IpAddr {
    peer_ip(request).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
}

fn may_enter(identity: &Identity, room: &str, shared: &Shared) -> bool {
    RoomAccess::of(identity).may_enter(room, &shared.chat.config.private_rooms)
}

/// `403`, the same for every room the caller may not enter (see `auth::ROOM_CLOSED`).
fn room_closed() -> HttpResponse {
    json(403, &serde_json::json!({ "error": crate::net::access::auth::ROOM_CLOSED }))
}

fn too_many(error: &str) -> HttpResponse {
    json(429, &serde_json::json!({ "error": error })).with_header(header("Retry-After", "1"))
}

/// `POST /api/ticket`: a one-time ticket for one WebSocket upgrade, valid 30 s, from this
/// address only (see `tickets.rs`). Needs authentication to be enabled.
fn issue_ticket(request: &Request, shared: &Shared, identity: Identity) -> HttpResponse {
    if !shared.chat.config.auth_required() {
        return json(404, &serde_json::json!({ "error": "authentication is not enabled on this server" }));
    }
    let Some(ip) = peer_ip(request) else {
        return json(400, &serde_json::json!({ "error": "no peer address" }));
    };
    // A ticket bought with a JWT carries its name and user to the socket.
    match shared.tickets.issue(ip, identity) {
        Ok(ticket) => json(
            200,
            &serde_json::json!({ "ticket": ticket, "expires_in": crate::net::access::tickets::TICKET_TTL.as_secs() }),
        )
        .with_header(header("Cache-Control", "no-store")),
        Err(NoTicket::AddressFull) => {
            shared.chat.metrics.rejected(crate::metrics::Refusal::Rate);
            too_many(&format!(
                "this address holds {} unused tickets already; use or let them expire",
                crate::net::access::tickets::MAX_TICKETS_PER_IP
            ))
        }
        Err(_) => {
            shared.chat.metrics.rejected(crate::metrics::Refusal::Capacity);
            json(503, &serde_json::json!({ "error": "too many outstanding tickets" }))
        }
    }
}

/// The chat URL the page should connect to: `--public-ws-url` if given, otherwise `/ws` on
/// the page's own origin — from the Host header if it is a well-formed `host[:port]` (it
/// ends up in a URL we hand back), else the HTTP listener's address.
fn ws_url(request: &Request, shared: &Shared) -> String {
    if let Some(url) = &shared.chat.config.public_ws_url {
        return url.clone();
    }
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    let host = request_header(request, "Host")
        .filter(|h| is_valid_host(h))
        .map_or_else(|| crate::net::shared::connectable(shared.http_addr).to_string(), str::to_string);
    format!("{scheme}://{host}/ws")
}

/// `name[:port]` or `[v6][:port]`: host-name characters only, a numeric port.
fn is_valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return false;
        }
        match (after, after.strip_prefix(':')) {
            ("", _) => (v6, None),
            (_, Some(port)) => (v6, Some(port)),
            _ => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_ok = port.is_none_or(|p| (1..=5).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()));
    name_ok && port_ok
}

/// What the page may load and where it may connect: only this origin (and, for the
/// second port, its WebSocket address); no inline script or style, no framing.
fn content_security_policy(request: &Request, shared: &Shared) -> String {
    let ws = ws_url(request, shared);
    let ws_origin = ws.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    let second = format!("{scheme}://{}", crate::net::shared::connectable(shared.ws_addr));
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {ws_origin} {second}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

fn static_file(path: &str, request: &Request, shared: &Shared) -> HttpResponse {
    let Some(file) = crate::net::http::files::find(path, shared.chat.config.static_dir.as_deref()) else {
        return text(404, "not found\n");
    };
    let mut response = Response::from_data(file.body)
        .with_status_code(200)
        .with_header(header("Content-Type", file.content_type))
        .with_header(header("Cache-Control", "no-cache"));
    if file.is_page {
        response = response
            .with_header(header("Content-Security-Policy", &content_security_policy(request, shared)))
            .with_header(header("X-Frame-Options", "DENY"))
            .with_header(header("Referrer-Policy", "no-referrer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_headers_are_validated() {
        for good in ["example.com", "example.com:3000", "127.0.0.1:3000", "[::1]:3000", "[::1]", "localhost"] {
            assert!(is_valid_host(good), "{good}");
        }
        for bad in ["", "evil.com/\"><script>", "a b", "x:3000:1", "x:abc", "x:123456", "[::1]junk", "[zz]:1"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }
}
