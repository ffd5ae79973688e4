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
