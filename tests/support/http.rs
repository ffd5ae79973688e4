//! A raw HTTP/1.1 client that sends paths verbatim (no normalisation of `..`).
#![allow(dead_code)]

#[allow(unused_imports)]
use super::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `GET path` exactly as given (no client-side normalization of `..`), with `extra`
/// header lines, and reads the whole response (the server closes: `Connection: close`).
pub fn http_request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> HttpResponse {
    http_request_from(None, addr, method, path, extra, "")
}

/// [`http_request`] from a chosen local address, with a body.
pub fn http_request_from(
    local: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &str,
) -> HttpResponse {
    let mut stream = match local {
        Some(local) => tcp_from(local, addr).expect("connect"),
        None => TcpStream::connect_timeout(&addr, WAIT).expect("connect"),
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !extra.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response (timeout is WAIT)");
    parse_response(&raw)
}

pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, &[])
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response has a header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v): &(String, String)| {
        k.eq_ignore_ascii_case("Transfer-Encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

/// Decodes a chunked transfer-encoded body (tiny_http uses it above 32 KiB).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The value of one sample line of `/metrics` (`name` with its labels), e.g.
/// `threadchat_refusals_total{reason="auth"}`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = http_get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// `POST /api/rooms/{room}/messages` with a JSON body, as a tool would send it (no Origin).
pub fn post_message(addr: SocketAddr, room: &str, json_body: &str) -> HttpResponse {
    let path = format!("/api/rooms/{room}/messages");
    http_request_from(None, addr, "POST", &path, &["Content-Type: application/json"], json_body)
}
