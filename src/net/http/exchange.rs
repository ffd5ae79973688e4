//! One HTTP request on a connection thread: take the body, hand the complete request to
//! tiny_http, and send its response back — then the connection waits for the next one.
//!
//! tiny_http answers the page and the API (`api.rs`, run by `http.rs`), but never talks to a client: it
//! listens on a private Unix socket and gets each request whole, as HTTP/1.0 with
//! `Connection: close`, from the connection thread that read it. Its response is read back
//! whole (it is bounded: see `tiny::MAX_RESPONSE_BYTES`) before any of it goes to the client. So
//! a tiny_http worker never waits on a client, however slow: only this connection's own
//! thread does, and only until the write deadline.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::net::entry::admission::Slot;
use crate::net::entry::head::{self, Head};
use crate::net::entry::stream::ConnStream;
use crate::net::shared::Shared;

/// Headers that describe one hop of a connection, not the request: never forwarded.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "upgrade", "expect", "te", "transfer-encoding", "proxy-connection", "content-length"];

/// What the connection does after the exchange.
pub enum After {
    KeepAlive,
    Close,
}

/// Answers one HTTP request whose head has been read. `buf` holds what followed the head.
// Not inlined into the connection thread's entry: its frame (response parsing, formatting)
// would otherwise stay resident under every idle WebSocket session on the same thread.
#[inline(never)]
pub fn answer(stream: &mut ConnStream, buf: &mut Vec<u8>, head: &Head, slot: &mut Slot, shared: &Shared) -> After {
    let conn = Arc::clone(&stream.conn);
    let refuse = |status: u16, text: &str, extra: &str| {
        shared.refuse(&conn, &format!("http {} {}", head.method, head.path()), status, text, extra);
        After::Close
    };
    let length = match head.content_length() {
        Ok(n) if n > head::MAX_BODY_BYTES => return refuse(413, "request body too large", ""),
        Ok(n) => n as usize,
        Err((status, text)) => return refuse(status, text, ""),
    };
    if let Some(expect) = head.header("Expect") {
        if !expect.trim().eq_ignore_ascii_case("100-continue") {
            return refuse(417, "only Expect: 100-continue is supported", "");
        }
        if buf.len() < length {
            // The client waits for this before it sends the body.
            conn.push_control(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"), false);
            conn.flush();
        }
    }
    while buf.len() < length {
        let old = buf.len();
        buf.resize(length, 0);
        match stream.read(&mut buf[old..]) {
            Ok(0) => return After::Close,
            Ok(n) => buf.truncate(old + n),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                buf.truncate(old);
                return refuse(408, "request body not completed in time", "");
            }
            Err(_) => return After::Close,
        }
    }
    let body: Vec<u8> = buf.drain(..length).collect();
    let client_ip = crate::net::access::per_ip::client_ip(
        conn.peer.ip(),
        head.header("X-Forwarded-For"),
        &shared.chat.config.trusted_proxies,
    );
    if !slot.start_request(client_ip) {
        return refuse(503, "too many HTTP requests in progress; try again", "Retry-After: 1\r\n");
    }
    let request = upstream_request(head, &body, client_ip);
    let raw = match shared.http.exchange(&request) {
        Ok(raw) => raw,
        Err(e) => {
            log::error!("http {}: tiny_http did not answer {} {}: {e}", conn.peer, head.method, head.path());
            return refuse(503, "the server could not answer in time; try again", "Retry-After: 1\r\n");
        }
    };
    let keep_alive = head.keep_alive() && !shared.is_shutting_down();
    let response = downstream_response(&raw, head.minor_version, keep_alive);
    drop(raw); // one copy of a big response is enough while a slow client reads it
    let Some(response) = response else {
        log::error!("http {}: tiny_http's answer to {} {} was not valid HTTP", conn.peer, head.method, head.path());
        return refuse(500, "internal error", "");
    };
    // The client gets as long to read its response as it had to send its request; one that
    // does not read is cut then, and only its own thread ever waited for it.
    let deadline = Instant::now() + shared.chat.config.handshake_timeout;
    if !conn.send_blocking(response, deadline) {
        log::info!("http {}: response not taken in time; closing", conn.peer);
        conn.terminate();
        return After::Close;
    }
    if keep_alive { After::KeepAlive } else { After::Close }
}

/// The request as tiny_http gets it: HTTP/1.0 (so its answer has a plain Content-Length and
/// ends with the connection), hop-by-hop headers dropped, the client's address added in
/// [`crate::net::http::respond::PEER_HEADER`] (any copy the client sent is dropped: only we may set it).
fn upstream_request(head: &Head, body: &[u8], client_ip: std::net::IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(format!("{} {} HTTP/1.0\r\n", head.method, head.target).as_bytes());
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) || lower.eq_ignore_ascii_case(crate::net::http::respond::PEER_HEADER) {
            continue;
        }
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("{}: {client_ip}\r\n", crate::net::http::respond::PEER_HEADER).as_bytes());
    if !body.is_empty() || matches!(head.method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// tiny_http's HTTP/1.0 answer as the client gets it: its HTTP version, our `Connection`
/// header, a Content-Length. `None` if it cannot be parsed.
fn downstream_response(raw: &[u8], minor_version: u8, keep_alive: bool) -> Option<Bytes> {
    let mut slots = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(head_len) = resp.parse(raw).ok()? else {
        return None;
    };
    let status = resp.code?;
    let body = &raw[head_len..];
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(format!("HTTP/1.{minor_version} {status} {}\r\n", resp.reason.unwrap_or("")).as_bytes());
    let mut has_length = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // HTTP/1.0 upstream: never chunked
        }
        has_length |= h.name.eq_ignore_ascii_case("content-length");
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if status == 426 {
        // RFC 9110 requires it with 426; tiny_http drops an `Upgrade` header a route sets.
        out.extend_from_slice(b"Upgrade: websocket\r\n");
    }
    out.extend_from_slice(match (keep_alive, minor_version) {
        (false, _) => b"Connection: close\r\n".as_slice(),
        (true, 0) => b"Connection: keep-alive\r\n",
        (true, _) => b"",
    });
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_requests_carry_our_peer_header_only() {
        let mut buf = Vec::new();
        let raw = b"POST /api/x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
            X-Threadchat-Peer: 6.6.6.6\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let head = head::read_head(&mut &raw[..], &mut buf).unwrap();
        let out = String::from_utf8(upstream_request(&head, b"{}", [10, 0, 0, 1].into())).unwrap();
        assert!(out.starts_with("POST /api/x?y=1 HTTP/1.0\r\n"), "{out}");
        assert!(out.contains("Host: h\r\n") && out.contains("X-Threadchat-Peer: 10.0.0.1\r\n"));
        assert!(!out.contains("6.6.6.6") && !out.contains("Upgrade") && !out.contains("Expect"), "{out}");
        assert!(out.ends_with("Content-Length: 2\r\n\r\n{}"), "{out}");
    }

    #[test]
    fn downstream_responses_get_our_framing() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok\n";
        let kept = downstream_response(raw, 1, true).unwrap();
        assert_eq!(&kept[..], b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n");
        let closed = downstream_response(raw, 1, false).unwrap();
        assert!(closed.ends_with(b"Connection: close\r\n\r\nok\n"));
        assert!(downstream_response(b"garbage", 1, true).is_none());
    }
}
