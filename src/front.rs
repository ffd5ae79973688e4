//! The HTTP listener's front: one thread that owns the public HTTP port and hands tiny_http
//! only complete, bounded requests, over a private Unix socket.
//!
//! Why it exists: tiny_http gives every connection a thread that blocks reading the request,
//! with no timeout and no limit on header size or count, and its accept thread stops for
//! good at the first accept error (out of fds, say). Exposed directly, a few hundred
//! half-open connections ("slowloris") would pin a few hundred threads, one 1 MiB header
//! line would be buffered whole, and a moment of fd exhaustion would take the port down.
//! tiny_http has no settings for any of that, so this thread sits in front of it:
//!
//! - It accepts with backoff on errors, and caps open connections (`--max-http-connections`;
//!   over it: `503`).
//! - It reads each request with epoll (through `mio`), so a silent or trickling client costs
//!   a buffer, not a thread, and it must finish its request — head and body — within
//!   `--handshake-timeout-secs` of starting it (`408`, or just closed if it sent nothing).
//! - It checks the head before anything is forwarded: at most [`MAX_HEAD_BYTES`] and
//!   [`MAX_HEADERS`] (`431`), a valid request (`400`), a body with a length (`411`) of at most
//!   [`MAX_BODY_BYTES`] (`413`). tiny_http's workers therefore never wait on a client.
//! - It terminates TLS (`--tls-cert`), so tiny_http sees plain HTTP either way.
//! - It tells tiny_http the client's address in an [`PEER_HEADER`] header (any copy the
//!   client sent is removed), since tiny_http's own peer address is the Unix socket.
//!
//! Responses are relayed as they are, up to [`RESPONSE_BUFFER`] ahead of a slow reader; a
//! client that stops reading for the request timeout is dropped, which frees the worker.
//!
//! Threads: this one ("http-front"). Sockets: it owns every client TCP socket of the HTTP
//! port and the client end of every Unix connection to tiny_http.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

/// Largest request head (request line and headers). Browsers send 1–2 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body (the API's only bodies are JSON chat messages).
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// How far a response may run ahead of a slow reader before tiny_http's worker waits.
pub const RESPONSE_BUFFER: usize = 1024 * 1024;
/// Carries `IP:PORT` of the real client to tiny_http; any client-sent copy is dropped.
pub const PEER_HEADER: &str = "X-Threadchat-Peer";
/// How long a refused connection may take to read our error response before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// After an accept error (EMFILE…), accepting pauses this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Deadlines are checked this often (so timeouts are exact to within this).
const SWEEP_EVERY: Duration = Duration::from_millis(250);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// Settings, from [`crate::config::Config`].
pub struct FrontConfig {
    pub max_connections: usize,
    /// Time to send one whole request; also how long an idle keep-alive connection lives.
    pub request_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// tiny_http, on its Unix socket.
    pub backend: Arc<crate::http::Workers>,
}

/// Handle to stop the front thread.
pub struct Front {
    stop: Arc<AtomicBool>,
    waker: Waker,
}

impl Front {
    pub fn start(listener: TcpListener, config: FrontConfig) -> io::Result<(Front, JoinHandle<()>)> {
        listener.set_nonblocking(true)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("http-front".into()).stack_size(256 * 1024).spawn({
            let stop = Arc::clone(&stop);
            move || {
                EventLoop { poll, listener, config, stop, proxies: HashMap::new(), next_id: 1, accept_failing: false }
                    .run()
            }
        })?;
        Ok((Front { stop, waker }, thread))
    }

    /// Stops accepting and closes every HTTP connection.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

struct EventLoop {
    poll: Poll,
    listener: mio::net::TcpListener,
    config: FrontConfig,
    /// Written by `Front::stop`; the loop exits when it sees it.
    stop: Arc<AtomicBool>,
    proxies: HashMap<usize, Proxy>,
    next_id: usize,
    /// Set while accept keeps failing, so an episode is logged once.
    accept_failing: bool,
}

/// Tokens: a proxy with id `n` uses `2n` for its client socket and `2n + 1` for tiny_http's.
fn client_token(id: usize) -> Token {
    Token(id * 2)
}
fn backend_token(id: usize) -> Token {
    Token(id * 2 + 1)
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut accept_paused_until: Option<Instant> = None;
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut scratch = vec![0u8; 16 * 1024];
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let timeout = next_sweep.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("http front: poll failed: {e}");
                return;
            }
            let mut accept_now = false;
            let mut touched: Vec<usize> = Vec::new();
            for event in events.iter() {
                match event.token() {
                    LISTENER => accept_now = true,
                    WAKER => {}
                    Token(t) => touched.push(t / 2),
                }
            }
            // Edge-triggered: after a pause, retry even without a new event, since the
            // connections that were waiting then will not be announced again.
            if accept_paused_until.is_some_and(|t| Instant::now() >= t) {
                accept_paused_until = None;
                accept_now = true;
            }
            if accept_now && accept_paused_until.is_none() {
                accept_paused_until = self.accept_all(&mut touched);
            }
            touched.sort_unstable();
            touched.dedup();
            for id in touched {
                self.pump(id, &mut scratch);
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + SWEEP_EVERY;
            }
        }
        log::debug!("http front: stopped ({} connection(s) closed)", self.proxies.len());
    }

    /// Accepts until the backlog is empty. Returns when to retry after a resource error.
    fn accept_all(&mut self, touched: &mut Vec<usize>) -> Option<Instant> {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) if self.accept_failing => {
                    log::warn!("http front: accept works again");
                    self.accept_failing = false;
                    accepted
                }
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: out of resources. Unlike tiny_http's accept
                    // thread, keep going: pause, and leave the connections in the backlog.
                    if !self.accept_failing {
                        log::error!("http front: accept failed: {e}; retrying every {ACCEPT_BACKOFF:?}");
                        self.accept_failing = true;
                    }
                    return Some(Instant::now() + ACCEPT_BACKOFF);
                }
            };
            if self.proxies.len() >= self.config.max_connections {
                log::info!("http {peer}: refused with 503: over --max-http-connections");
                // Best effort: a fresh socket's send buffer takes this at once.
                let _ = stream.write(&canned(503, "too many open HTTP connections; try again later"));
                continue;
            }
            let _ = stream.set_nodelay(true);
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) =
                self.poll.registry().register(&mut stream, client_token(id), Interest::READABLE | Interest::WRITABLE)
            {
                log::error!("http front: cannot watch a connection: {e}");
                continue;
            }
            let tls = match &self.config.tls {
                None => None,
                Some(cfg) => match rustls::ServerConnection::new(Arc::clone(cfg)) {
                    Ok(tls) => Some(Box::new(tls)),
                    Err(e) => {
                        log::error!("http {peer}: TLS setup failed: {e}");
                        continue;
                    }
                },
            };
            self.proxies.insert(id, Proxy::new(stream, peer, tls, self.config.request_timeout));
            // Data may already be waiting (edge-triggered: no event will say so again).
            touched.push(id);
        }
    }

    /// Moves whatever can move for one connection; closes it when it is done.
    fn pump(&mut self, id: usize, scratch: &mut [u8]) {
        let Some(proxy) = self.proxies.get_mut(&id) else {
            return;
        };
        let done = proxy.pump(id, &self.config, self.poll.registry(), scratch).unwrap_or_else(|e| {
            log::debug!("http {}: connection ended: {e}", proxy.peer);
            true
        });
        if done {
            self.close(id);
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut proxy) = self.proxies.remove(&id) {
            if let Some(tls) = proxy.tls.as_mut() {
                // Tell the client the response is complete (not truncated); best effort.
                tls.send_close_notify();
                let _ = tls.write_tls(&mut proxy.client);
            }
            let registry = self.poll.registry();
            let _ = registry.deregister(&mut proxy.client);
            if let Some(backend) = proxy.backend.as_mut() {
                let _ = registry.deregister(backend);
            }
        }
    }

    /// Enforces deadlines: a request not complete in time gets `408`; an idle keep-alive
    /// connection, a reader that stopped reading, or a refused one that lingers, is closed.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<usize> = self.proxies.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            let Some(proxy) = self.proxies.get_mut(&id) else { continue };
            if proxy.refused || proxy.input.is_empty() {
                self.close(id);
            } else {
                proxy.refuse(408, "request not completed in time");
                let mut scratch = [0u8; 0];
                self.pump(id, &mut scratch);
            }
        }
    }
}

/// One client connection and, once it has sent a request, its connection to tiny_http.
struct Proxy {
    client: TcpStream,
    peer: SocketAddr,
    /// Boxed: a rustls connection is a few hundred bytes of state.
    tls: Option<Box<rustls::ServerConnection>>,
    backend: Option<UnixStream>,
    /// Plain bytes of the request being received (head, then body), until complete.
    input: Vec<u8>,
    /// Complete requests waiting to be written to tiny_http.
    to_backend: Vec<u8>,
    /// Response bytes waiting to be written to the client (before encryption).
    to_client: Vec<u8>,
    /// When this connection is dropped unless it makes progress. Starts at accept; moved
    /// forward by a complete request and by response bytes the client accepts, never by
    /// bytes of an incomplete request (so trickling does not keep a connection alive).
    deadline: Instant,
    client_eof: bool,
    backend_eof: bool,
    /// An error response is queued: forward nothing more, discard input, close after it.
    refused: bool,
}

impl Proxy {
    fn new(client: TcpStream, peer: SocketAddr, tls: Option<Box<rustls::ServerConnection>>, timeout: Duration) -> Self {
        Proxy {
            client,
            peer,
            tls,
            backend: None,
            input: Vec::new(),
            to_backend: Vec::new(),
            to_client: Vec::new(),
            deadline: Instant::now() + timeout,
            client_eof: false,
            backend_eof: false,
            refused: false,
        }
    }

    /// Answers with an error and stops forwarding.
    fn refuse(&mut self, status: u16, why: &str) {
        log::info!("http {}: refused with {status}: {why}", self.peer);
        self.refused = true;
        self.input = Vec::new();
        self.to_client.extend_from_slice(&canned(status, why));
        self.deadline = Instant::now() + REFUSAL_LINGER;
    }

    /// One round of I/O in every direction that can move. Returns whether the connection
    /// is finished. Every read and write here is non-blocking.
    fn pump(&mut self, id: usize, cfg: &FrontConfig, registry: &mio::Registry, scratch: &mut [u8]) -> io::Result<bool> {
        // Client → us. Stop reading while a backlog waits for tiny_http (back-pressure).
        while !self.client_eof && self.to_backend.len() < RESPONSE_BUFFER && !scratch.is_empty() {
            match self.read_client(scratch)? {
                None => break,
                Some(0) => self.client_eof = true,
                Some(n) if self.refused => {
                    let _ = n; // draining until the client closes; see `refuse`
                }
                Some(n) => self.take_input(&scratch[..n], cfg),
            }
        }
        // Us → tiny_http.
        if !self.to_backend.is_empty() && self.backend.is_none() && !self.refused {
            match cfg.backend.connect() {
                Ok(mut backend) => {
                    registry.register(&mut backend, backend_token(id), Interest::READABLE | Interest::WRITABLE)?;
                    self.backend = Some(backend);
                }
                Err(e) => {
                    log::error!("http front: cannot reach the HTTP workers: {e}");
                    self.to_backend.clear();
                    self.refuse(503, "server busy; try again");
                }
            }
        }
        if let Some(backend) = self.backend.as_mut() {
            while !self.to_backend.is_empty() {
                match backend.write(&self.to_backend) {
                    Ok(n) => {
                        self.to_backend.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // tiny_http → us, greedily up to the buffer, so its worker is free quickly.
            while !self.backend_eof && self.to_client.len() < RESPONSE_BUFFER && !scratch.is_empty() {
                match backend.read(scratch) {
                    Ok(0) => self.backend_eof = true,
                    Ok(n) => self.to_client.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Us → client.
        let sent = self.write_client()?;
        if sent > 0 && !self.refused {
            self.deadline = Instant::now() + cfg.request_timeout;
        }
        let flushed = self.to_client.is_empty() && !self.tls.as_ref().is_some_and(|t| t.wants_write());
        if !flushed {
            return Ok(false);
        }
        if self.refused {
            // Response out: stop sending, keep discarding input until the client closes
            // (closing with unread input would reset the connection and could destroy the
            // response before the client reads it) or the linger deadline passes.
            let _ = self.client.shutdown(std::net::Shutdown::Write);
            return Ok(self.client_eof);
        }
        // tiny_http closed (Connection: close, HTTP/1.0) and everything reached the client.
        if self.backend_eof {
            return Ok(true);
        }
        // The client hung up and has nothing in flight.
        Ok(self.client_eof && self.to_backend.is_empty() && (self.backend.is_none() || self.input.is_empty()))
    }

    /// Reads plain bytes from the client: `None` when nothing is available now.
    fn read_client(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(tls) = self.tls.as_mut() else {
            return match self.client.read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
                Err(e) => Err(e),
            };
        };
        loop {
            // Plaintext already decrypted comes first.
            match tls.reader().read(buf) {
                Ok(n) => return Ok(Some(n)), // 0: the client sent close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.client) {
                Ok(0) => return Ok(Some(0)),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Send the alert rustls prepared, then give up on this connection.
                let _ = tls.write_tls(&mut self.client);
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
    }

    /// Writes queued response bytes (through TLS if on). Returns the plain bytes sent.
    fn write_client(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        loop {
            if let Some(tls) = self.tls.as_mut() {
                // Ciphertext first; new plaintext goes in only once rustls has sent its
                // last batch, so rustls never buffers more than one chunk.
                while tls.wants_write() {
                    match tls.write_tls(&mut self.client) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if self.to_client.is_empty() || tls.is_handshaking() {
                    return Ok(sent);
                }
                let n = self.to_client.len().min(64 * 1024);
                let n = tls.writer().write(&self.to_client[..n])?;
                self.to_client.drain(..n);
                sent += n;
            } else {
                if self.to_client.is_empty() {
                    return Ok(sent);
                }
                match self.client.write(&self.to_client) {
                    Ok(n) => {
                        self.to_client.drain(..n);
                        sent += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Adds request bytes; forwards each request once it is complete and valid.
    fn take_input(&mut self, data: &[u8], cfg: &FrontConfig) {
        self.input.extend_from_slice(data);
        while !self.input.is_empty() && !self.refused {
            match check_request(&self.input) {
                Ok(Check::Incomplete) => return,
                Ok(Check::Continue { head_len, head }) => {
                    // tiny_http would send this itself, but only once a worker reads the
                    // body, and it sees the request only once the body is here.
                    self.to_client.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.input.splice(..head_len, head);
                    return;
                }
                Ok(Check::Complete { len, head_len, head }) => {
                    self.to_backend.extend_from_slice(&forward_head(&head, self.peer, &cfg.trusted_proxies));
                    self.to_backend.extend_from_slice(&self.input[head_len..len]);
                    self.input.drain(..len);
                    self.deadline = Instant::now() + cfg.request_timeout;
                }
                Err((status, why)) => self.refuse(status, why),
            }
        }
    }
}

enum Check {
    /// More bytes are needed (and the limits are not exceeded yet).
    Incomplete,
    /// The client sent `Expect: 100-continue` and waits for `100 Continue` before sending
    /// its body; `head` (of `head_len` bytes as received) is the head without `Expect`.
    Continue { head_len: usize, head: Vec<u8> },
    /// A whole request of `len` bytes, whose head (`head_len` bytes) is to be forwarded as
    /// `head`.
    Complete { len: usize, head_len: usize, head: Vec<u8> },
}

/// Validates the request at the start of `input` against the limits.
fn check_request(input: &[u8]) -> Result<Check, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD_BYTES => {
            return Err((431, "request head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(Check::Incomplete),
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => return Err((431, "request head too large")),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err((431, "too many request headers")),
        Err(_) => return Err((400, "malformed HTTP request")),
    };
    let mut length: Option<u64> = None;
    let mut expect = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("Transfer-Encoding") {
            return Err((411, "send a Content-Length; chunked request bodies are not accepted"));
        }
        if h.name.eq_ignore_ascii_case("Content-Length") {
            let value = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            match (value, length) {
                (None, _) => return Err((400, "invalid Content-Length")),
                (Some(v), Some(prev)) if v != prev => return Err((400, "conflicting Content-Length headers")),
                (Some(v), _) => length = Some(v),
            }
        }
        if h.name.eq_ignore_ascii_case("Expect") {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return Err((417, "only Expect: 100-continue is supported"));
            }
            expect = true;
        }
    }
    let body = length.unwrap_or(0);
    if body > MAX_BODY_BYTES {
        return Err((413, "request body too large"));
    }
    if expect {
        let head = without_header(&req, "Expect");
        if input.len() - head_len < body as usize {
            return Ok(Check::Continue { head_len, head });
        }
        // The body came without waiting for `100 Continue`: just drop the header.
        return Ok(Check::Complete { len: head_len + body as usize, head_len, head });
    }
    let len = head_len + body as usize;
    if input.len() < len {
        return Ok(Check::Incomplete);
    }
    Ok(Check::Complete { len, head_len, head: input[..head_len].to_vec() })
}

/// The head re-serialised without the header `name`.
fn without_header(req: &httparse::Request, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let _ = write!(
        out,
        "{} {} HTTP/1.{}\r\n",
        req.method.unwrap_or("GET"),
        req.path.unwrap_or("/"),
        req.version.unwrap_or(1)
    );
    for h in req.headers.iter().filter(|h| !h.name.eq_ignore_ascii_case(name)) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The head with the peer header set to the real client address (a client's own copy is
/// removed, so it cannot claim another address). From a trusted proxy, that address comes
/// from `X-Forwarded-For` (the port is then unknown: 0).
fn forward_head(head: &[u8], peer: SocketAddr, trusted: &[std::net::IpAddr]) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // Already validated by `check_request`.
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return head.to_vec();
    }
    let forwarded = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("X-Forwarded-For"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    let ip = crate::guard::client_ip(peer.ip(), forwarded, trusted);
    let peer = if ip == peer.ip() { peer } else { SocketAddr::new(ip, 0) };
    let mut out = without_header(&req, PEER_HEADER);
    out.truncate(out.len() - 2);
    let _ = write!(out, "{PEER_HEADER}: {peer}\r\n\r\n");
    out
}

/// A complete response that closes the connection.
fn canned(status: u16, body: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> usize {
        match check_request(input) {
            Ok(Check::Complete { len, .. }) => len,
            Ok(_) => panic!("incomplete"),
            Err(e) => panic!("refused: {e:?}"),
        }
    }

    #[test]
    fn waits_for_the_whole_body() {
        let req = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab";
        assert!(matches!(check_request(req), Ok(Check::Incomplete)));
        let req = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcdeGET";
        assert_eq!(complete(req), req.len() - 3);
    }

    #[test]
    fn refuses_what_tiny_http_would_accept() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(check_request(long.as_bytes()).err().map(|e| e.0), Some(431));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(check_request(many.as_bytes()).err().map(|e| e.0), Some(431));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check_request(chunked).err().map(|e| e.0), Some(411));
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1);
        assert_eq!(check_request(big.as_bytes()).err().map(|e| e.0), Some(413));
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(check_request(twice).err().map(|e| e.0), Some(400));
        assert_eq!(check_request(b"\x16\x03\x01 junk\r\n\r\n").err().map(|e| e.0), Some(400));
    }

    #[test]
    fn expect_100_continue_is_answered_here() {
        let req = b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let Ok(Check::Continue { head_len, head }) = check_request(req) else { panic!("no 100 Continue") };
        assert_eq!(head_len, req.len());
        assert!(!String::from_utf8_lossy(&head).contains("Expect"));
        // Once the body is here, the head without Expect is a complete request.
        let mut with_body = head.clone();
        with_body.extend_from_slice(b"hi");
        assert_eq!(complete(&with_body), with_body.len());
        // A client that sends the body without waiting is not asked again.
        let mut eager = req.to_vec();
        eager.extend_from_slice(b"hi");
        assert_eq!(complete(&eager), eager.len());
    }

    #[test]
    fn the_peer_header_cannot_be_forged() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nx-threadchat-peer: 6.6.6.6:1\r\n\r\n";
        let out = String::from_utf8(forward_head(head, "10.0.0.1:5".parse().unwrap(), &[])).unwrap();
        assert!(!out.contains("6.6.6.6"), "{out}");
        assert!(out.ends_with("X-Threadchat-Peer: 10.0.0.1:5\r\n\r\n"), "{out}");
        assert!(out.starts_with("GET / HTTP/1.1\r\nHost: a\r\n"), "{out}");
    }
}
