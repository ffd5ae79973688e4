//! Building tiny_http responses, and reading what the connection thread told tiny_http
//! about the client: the small helpers every route uses.

use std::io::Cursor;
use std::net::IpAddr;

use tiny_http::{Header, Request, Response, StatusCode};

pub type HttpResponse = Response<Cursor<Vec<u8>>>;

/// Carries the client's address (after `--trusted-proxy` resolution) to tiny_http. Set only
/// by connection threads; a copy sent by a client is dropped before forwarding.
pub const PEER_HEADER: &str = "X-Threadchat-Peer";

/// The client's address, as its connection thread recorded it.
pub fn peer_ip(request: &Request) -> Option<IpAddr> {
    request_header(request, PEER_HEADER).and_then(|v| v.parse().ok())
}

pub fn request_header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

pub fn header(name: &str, value: &str) -> Header {
    // Only called with ASCII names and values of ours: cannot fail.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

pub fn text(status: u16, body: &str) -> HttpResponse {
    Response::from_data(body.as_bytes().to_vec())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    Response::from_data(value.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

/// A request's body as a JSON object (at most `head::MAX_BODY_BYTES`); else the `400`.
pub fn json_body(request: &mut Request) -> Result<serde_json::Map<String, serde_json::Value>, HttpResponse> {
    let limit = crate::net::entry::head::MAX_BODY_BYTES;
    let mut body = Vec::new();
    if std::io::Read::read_to_end(&mut std::io::Read::take(request.as_reader(), limit + 1), &mut body).is_err()
        || body.len() as u64 > limit
    {
        return Err(json(400, &serde_json::json!({ "error": "could not read the body" })));
    }
    match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(json(400, &serde_json::json!({ "error": "body must be a JSON object" }))),
    }
}

/// The checks before any credential, for every request that changes state: a browser page
/// from a foreign origin (`403`) and a body that is not JSON (`415`). Together they stop
/// cross-site form posts (CSRF): a form can send neither an allowed `Origin` nor
/// `application/json`. `Some`: the refusal.
pub fn refuse_cross_site(request: &Request, shared: &crate::net::shared::Shared) -> Option<HttpResponse> {
    if let Some(origin) = request_header(request, "Origin")
        && !shared.allowed_origins.iter().any(|o| o == origin)
    {
        shared.chat.metrics.rejected(crate::metrics::Refusal::Origin);
        return Some(json(403, &serde_json::json!({ "error": "origin not allowed (see --allow-origin)" })));
    }
    let has_body = request.body_length().is_some_and(|n| n > 0);
    let json_type = request_header(request, "Content-Type")
        .is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if has_body && !json_type {
        shared.chat.metrics.rejected(crate::metrics::Refusal::BadRequest);
        return Some(json(415, &serde_json::json!({ "error": "send the body as Content-Type: application/json" })));
    }
    None
}

/// A failed credential: it spends the address's upgrade budget, so guessing is as slow over
/// HTTP as at the upgrade — `429` once spent, else `401` with `error`.
pub fn refuse_credential(request: &Request, shared: &crate::net::shared::Shared, error: &str) -> HttpResponse {
    let cfg = &shared.chat.config;
    let ip = peer_ip(request).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !shared.ips.allow_upgrade(ip, cfg.upgrade_rate, cfg.upgrade_rate * 2.0) {
        shared.chat.metrics.rejected(crate::metrics::Refusal::Rate);
        return json(429, &serde_json::json!({ "error": "too many failed attempts; slow down" }))
            .with_header(header("Retry-After", "1"));
    }
    shared.chat.metrics.rejected(crate::metrics::Refusal::Auth);
    json(401, &serde_json::json!({ "error": error })).with_header(header("WWW-Authenticate", "Bearer"))
}

/// Over the address's request rate (`--message-rate`, bursts of twice that; shared by every
/// `POST` and moderation request from one address): `Some` is the `429`.
pub fn refuse_over_rate(request: &Request, shared: &crate::net::shared::Shared) -> Option<HttpResponse> {
    let ip = peer_ip(request).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let rate = shared.chat.config.message_rate;
    if shared.ips.allow_post(ip, rate, rate * 2.0) {
        return None;
    }
    shared.chat.metrics.rejected(crate::metrics::Refusal::Rate);
    let error = format!("at most {rate} requests per second from one address");
    Some(json(429, &serde_json::json!({ "error": error })).with_header(header("Retry-After", "1")))
}
