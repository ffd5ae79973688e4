//! Reading one HTTP/1.1 request head, within limits, from any connection thread.
//!
//! Every connection on either port starts here: its thread reads a request head (the
//! request line and headers), and only then decides whether it is a WebSocket upgrade or an
//! HTTP request. The limits are what make a thread per connection safe: a head is at most
//! [`MAX_HEAD_BYTES`] with at most [`MAX_HEADERS`] lines (`431` otherwise), and the
//! connection's deadline (set by the caller on the stream) bounds how long it may take.

use std::io::{self, Read};

use bytes::Bytes;

/// Largest request head (request line and headers). Browsers send 1–2 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body (the API's only bodies are small JSON objects).
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Bytes read from the socket per `read` while looking for the end of a head.
const READ_CHUNK: usize = 2048;

/// A parsed request head. Header values are ASCII (anything else is refused with `400`).
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

/// Why no head could be read. Each maps to one documented answer (see [`HeadError::status`]).
#[derive(Debug)]
pub enum HeadError {
    /// The connection closed, or was shut by us, before a single byte: nothing to answer.
    Closed,
    /// The deadline passed. `started`: some bytes had arrived (→ `408`), or none (→ close).
    TimedOut {
        started: bool,
    },
    TooLarge,
    TooManyHeaders,
    Malformed(String),
    /// The socket failed (reset, TLS error): nobody to answer. (The error is only logged.)
    Io(#[allow(dead_code)] io::Error),
}

impl HeadError {
    /// The status and text to answer with, if anyone is there to read it.
    pub fn status(&self) -> Option<(u16, String)> {
        match self {
            HeadError::Closed | HeadError::Io(_) | HeadError::TimedOut { started: false } => None,
            HeadError::TimedOut { started: true } => Some((408, "request not completed in time".into())),
            HeadError::TooLarge => Some((431, "request headers too large".into())),
            HeadError::TooManyHeaders => Some((431, "too many request headers".into())),
            HeadError::Malformed(why) => Some((400, format!("bad request: {why}"))),
        }
    }
}

/// Reads until `buf` holds a complete head, then parses it and removes it from `buf`.
/// Whatever followed the head (a pipelined request, a body, WebSocket frames) stays in
/// `buf` for the caller.
// Not inlined: the parser's header array (2 KiB) must not join the frames a WebSocket
// session idles in for hours (see `threads::release_unused_stack`).
#[inline(never)]
pub fn read_head(stream: &mut impl Read, buf: &mut Vec<u8>) -> Result<Head, HeadError> {
    loop {
        if let Some((head, len)) = parse(buf)? {
            buf.drain(..len);
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        let old = buf.len();
        buf.resize(old + READ_CHUNK, 0);
        let result = stream.read(&mut buf[old..]);
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(old + n);
        match result {
            Ok(0) if old == 0 => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Malformed("connection closed mid-request".into())),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                return Err(HeadError::TimedOut { started: old > 0 });
            }
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// `Ok(None)`: incomplete, read more.
fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    // A request target is ASCII (RFC 9112 §3.2; RFC 3986: anything else percent-encoded).
    // httparse lets raw UTF-8 through, and tiny_http then fails on it: refuse it here, with
    // the reason, before it reaches anything.
    let target = req.path.unwrap_or_default();
    if !target.is_ascii() {
        return Err(HeadError::Malformed("the request target is not ASCII; percent-encode it".into()));
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // obs-text (bytes ≥ 0x80) is legal but never needed here, and every consumer
        // downstream wants text: refuse it plainly rather than guess an encoding.
        let Some(value) = std::str::from_utf8(h.value).ok().filter(|v| v.is_ascii()) else {
            return Err(HeadError::Malformed(format!("header {} is not ASCII", h.name)));
        };
        headers.push((h.name.to_string(), value.to_string()));
    }
    let head = Head {
        method: req.method.unwrap_or_default().to_string(),
        target: target.to_string(),
        minor_version: req.version.unwrap_or(1),
        headers,
    };
    Ok(Some((head, len)))
}

impl Head {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header called `name`.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q.split('#').next().unwrap_or(""))
    }

    /// `Upgrade: websocket`: the client wants a WebSocket (whether it gets one is the
    /// session's to decide).
    pub fn wants_websocket(&self) -> bool {
        self.all("Upgrade").any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
    }

    /// Whether the connection may stay open after the response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        let has =
            |token: &str| self.all("Connection").any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)));
        if self.minor_version == 0 { has("keep-alive") } else { !has("close") }
    }

    /// The body length this head announces: `Ok(0)` without one; `Err` with the status to
    /// answer for bodies we do not take (chunked: `411`; two different lengths: `400`).
    pub fn content_length(&self) -> Result<u64, (u16, &'static str)> {
        if self.header("Transfer-Encoding").is_some() {
            return Err((411, "chunked bodies are not accepted; send Content-Length"));
        }
        let mut length = None;
        for v in self.all("Content-Length") {
            let n: u64 = v.trim().parse().map_err(|_| (400, "bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err((400, "conflicting Content-Length headers"));
            }
            length = Some(n);
        }
        Ok(length.unwrap_or(0))
    }

    /// As tungstenite's request type, for its handshake checks and response.
    pub fn to_ws_request(&self) -> Result<tungstenite::handshake::server::Request, String> {
        let mut builder = tungstenite::http::Request::builder()
            .method(self.method.as_str())
            .uri(self.target.as_str())
            .version(if self.minor_version == 0 {
                tungstenite::http::Version::HTTP_10
            } else {
                tungstenite::http::Version::HTTP_11
            });
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(()).map_err(|e| e.to_string())
    }
}

/// The headers every response of ours carries, whoever builds it: no MIME sniffing, and no
/// framing of our pages by other sites.
pub const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n";

/// A complete plain-text response that closes the connection: what a connection thread
/// answers itself (refusals, timeouts), without tiny_http.
pub fn plain_response(status: u16, body: &str, extra_headers: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n{SECURITY_HEADERS}{extra_headers}\r\n{body}\n",
        reason(status),
        body.len() + 1
    ))
}

/// The reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> (Result<Head, HeadError>, Vec<u8>) {
        let mut buf = Vec::new();
        let r = read_head(&mut &input[..], &mut buf);
        (r, buf)
    }

    #[test]
    fn parses_a_head_and_keeps_what_follows() {
        let (head, rest) = read(b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\r\n\x81\x00");
        let head = head.unwrap();
        assert_eq!((head.method.as_str(), head.path(), head.query()), ("GET", "/ws", "x=1"));
        assert!(head.wants_websocket() && head.keep_alive());
        assert_eq!(head.header("host"), Some("a"));
        assert_eq!(rest, b"\x81\x00");
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        assert!(matches!(read(b"").0, Err(HeadError::Closed)));
        assert!(matches!(read(b"GET / HTTP/1.1\r\nHost").0, Err(HeadError::Malformed(_))));
        assert!(matches!(read(b"\x16\x03\x01 junk\r\n\r\n").0, Err(HeadError::Malformed(_))));
        assert!(matches!(read(b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n").0, Err(HeadError::Malformed(_))));
        for target in [&b"/caf\xc3\xa9"[..], b"/?x=\xc3\xa9", b"/api/rooms/\xef\xbd\x82/messages"] {
            let head = [&b"GET "[..], target, b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
            assert!(matches!(read(&head).0, Err(HeadError::Malformed(_))), "{target:?}");
        }
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD_BYTES], b"\r\n\r\n"].concat();
        assert!(matches!(read(&long).0, Err(HeadError::TooLarge)));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: v\r\n")).collect();
        assert!(matches!(read(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).0, Err(HeadError::TooManyHeaders)));
    }

    #[test]
    fn body_framing_and_keep_alive() {
        let h = |s: &str| read(s.as_bytes()).0.unwrap();
        assert_eq!(h("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").content_length(), Ok(5));
        assert_eq!(h("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").content_length().unwrap_err().0, 411);
        let two = h("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(two.content_length().unwrap_err().0, 400);
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(h("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
    }
}
