//! One client's thread: the WebSocket upgrade, then a blocking read loop until the
//! connection ends, then cleanup.
//!
//! This thread is the only reader of its socket and the only user of its tungstenite state
//! machine. It never writes to the socket itself: everything it (or tungstenite, for pongs
//! and Close replies) sends goes into the connection's outbox (see `conn.rs`), the same
//! queue broadcasts use, so frames from different threads never interleave.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message, WebSocket, error::ProtocolError};

use crate::conn::{Conn, Kind, Push};
use crate::guard;
use crate::hub::close_code;
use crate::metrics::Disconnect;
use crate::protocol::{self, ClientMsg, ServerMsg};
use crate::sequencer::{Reply, Submit};
use crate::server::{LiveGuard, Shared};

/// tungstenite's read buffer per connection. Its default is 128 KiB, which for 10,000 idle
/// clients would be over a GiB; and tungstenite zero-fills the whole buffer before every
/// read, so all of it is resident for every client. Chat frames are small: 1 KiB holds a
/// typical message in one read, and larger ones simply take several.
const READ_BUFFER_BYTES: usize = 1024;

/// How long a closing connection may take to drain its last frames (our Close included)
/// before the socket is shut anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How the read loop ended.
enum End {
    /// The client sent a Close frame (possibly answering ours): its code and reason.
    ClientClosed(String),
    /// The client broke the protocol; we close with this code and reason.
    Failed(u16, String),
    /// The TCP connection is gone (EOF, reset, or shut down by the heartbeat/shutdown).
    Gone(String),
}

/// Entry point of a client thread.
pub fn run(stream: TcpStream, peer: SocketAddr, id: u64, shared: &Arc<Shared>, _live: LiveGuard) {
    // Chat frames are small and latency matters more than packet count; our outbox already
    // batches queued frames into one sendmsg, so Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let tls = match &shared.tls {
        None => None,
        Some(config) => match new_tls(config) {
            Ok(tls) => Some(tls),
            Err(e) => {
                log::error!("{peer}: TLS setup failed: {e}");
                return;
            }
        },
    };
    let conn = Arc::new(Conn::new(
        id,
        peer,
        stream,
        tls,
        shared.config.max_queued_bytes,
        Arc::clone(&shared.flusher),
        Arc::clone(&shared.metrics),
    ));
    if !shared.hub.add(Arc::clone(&conn)) {
        return; // shutting down
    }
    // Removes us from the hub on every exit path, panics included.
    let _membership = Membership { shared, conn: &conn };
    let mut ip_slot =
        IpSlot { shared, ip: peer.ip(), count: shared.ips.connect(peer.ip(), shared.config.upgrade_rate * 2.0) };

    let Some(mut ws) = handshake(&conn, shared, &mut ip_slot) else {
        return;
    };
    // The handshake was the deepest this thread will go for a while; an idle client then
    // keeps only the few KiB its blocking read needs.
    crate::ws_server::release_unused_stack();
    let kind = conn.kind();
    log::info!("client {id} ({peer}): connected to {}", if kind == Kind::Chat { "/ws" } else { "/echo" });

    shared.metrics.connections.fetch_add(1, Ordering::Relaxed);

    let end = read_loop(&mut ws, &conn, shared);
    // Leave the list first, so the `leave` notice goes out now rather than after lingering.
    shared.hub.remove(&conn);
    conn.set_close_reason(match &end {
        End::ClientClosed(_) => Disconnect::ClientClose,
        End::Gone(_) => Disconnect::Gone,
        End::Failed(close_code::TOO_BIG, _) => Disconnect::TooBig,
        End::Failed(close_code::INVALID_DATA, _) => Disconnect::InvalidUtf8,
        End::Failed(close_code::PROTOCOL, _) => Disconnect::Protocol,
        End::Failed(close_code::POLICY, why) if why.starts_with("slow") => Disconnect::SlowConsumer,
        End::Failed(close_code::POLICY, _) => Disconnect::RateLimit,
        End::Failed(..) => Disconnect::Error,
    });
    shared.metrics.disconnected(conn.close_reason().unwrap_or(Disconnect::Gone));
    match end {
        End::ClientClosed(how) => {
            // tungstenite has queued its Close reply; writing it goes into our outbox, which
            // drops it if we had already sent a Close of our own.
            let _ = ws.flush();
            log::info!("client {id} ({peer}): closed by client ({how})");
            conn.send_close_notify();
            linger(&conn, false);
        }
        End::Failed(code, reason) => {
            log::info!("client {id} ({peer}): closing with {code}: {reason}");
            if conn.push_close(code, &reason) {
                conn.flush();
            }
            conn.send_close_notify();
            linger(&conn, true);
        }
        End::Gone(why) => log::info!("client {id} ({peer}): disconnected ({why})"),
    }
}

/// A connection's TLS state, built on the heap by a function of its own: a rustls
/// connection is several KiB, and as a local of `run` it would deepen every frame below,
/// keeping an extra stack page resident in every idle client thread, TLS or not.
#[inline(never)]
fn new_tls(
    config: &Arc<rustls::ServerConfig>,
) -> Result<Box<parking_lot::Mutex<rustls::ServerConnection>>, rustls::Error> {
    Ok(Box::new(parking_lot::Mutex::new(rustls::ServerConnection::new(Arc::clone(config))?)))
}

/// Counts this connection against its IP address until the thread ends.
struct IpSlot<'a> {
    shared: &'a Shared,
    ip: std::net::IpAddr,
    /// Connections from this address, this one included, when it arrived.
    count: usize,
}

impl IpSlot<'_> {
    /// Counts the connection against `ip` instead (the client behind a trusted proxy).
    fn move_to(&mut self, ip: std::net::IpAddr) {
        if ip != self.ip {
            self.count = self.shared.ips.connect(ip, self.shared.config.upgrade_rate * 2.0);
            self.shared.ips.disconnect(self.ip);
            self.ip = ip;
        }
    }
}

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        self.shared.ips.disconnect(self.ip);
    }
}

/// Drop guard: whatever ends the thread, the connection leaves the hub and is marked done.
struct Membership<'a> {
    shared: &'a Shared,
    conn: &'a Arc<Conn>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.shared.hub.remove(self.conn);
        self.conn.finished.store(true, Ordering::Release);
    }
}

fn ws_config(shared: &Shared) -> WebSocketConfig {
    let max = shared.config.max_message_bytes;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // 0: hand every frame to our stream at once; the outbox is the only buffer.
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Runs the HTTP upgrade with a deadline. On refusal the client gets a real HTTP status
/// (404 unknown path, 503 full or shutting down, 400 not an upgrade, 431 headers too big).
// Not inlined (nor are `linger` and `handle_chat`): their big frames must not become part
// of the frames a connection idles in for hours; see `ws_server::release_unused_stack`.
#[inline(never)]
fn handshake(conn: &Arc<Conn>, shared: &Shared, ip_slot: &mut IpSlot) -> Option<WebSocket<ClientStream>> {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let stream = ClientStream { conn: Arc::clone(conn), deadline: Some(deadline), upgraded: false, overflowed: false };
    let mut kind = Kind::Handshaking;
    let mut query = String::new();
    let mut identity = guard::Identity::Anonymous;
    // The Err type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        query = req.uri().query().unwrap_or("").to_string();
        kind = match req.uri().path() {
            "/ws" => Kind::Chat,
            "/echo" => Kind::Echo,
            _ => {
                return Err(refusal(StatusCode::NOT_FOUND, "no WebSocket endpoint here; use /ws or /echo"));
            }
        };
        identity = admit(req, conn, shared, ip_slot)?;
        Ok(resp)
    };
    let peer = conn.peer;
    let mut ws = match tungstenite::accept_hdr_with_config(stream, callback, Some(ws_config(shared))) {
        Ok(ws) => ws,
        Err(HandshakeError::Failure(WsError::Http(resp))) => {
            log::info!("{peer}: upgrade refused with {}", resp.status());
            shared.metrics.rejected(Some(resp.status().as_u16()));
            linger(conn, false);
            return None;
        }
        Err(HandshakeError::Failure(e)) => {
            let refused = match &e {
                WsError::Io(_) => None, // timed out or hung up: nobody to answer
                WsError::Capacity(_) | WsError::AttackAttempt => {
                    Some((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large".to_string()))
                }
                WsError::Protocol(ProtocolError::HttparseError(httparse::Error::TooManyHeaders)) => {
                    Some((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers".to_string()))
                }
                other => Some((StatusCode::BAD_REQUEST, format!("not a valid WebSocket upgrade: {other}"))),
            };
            match refused {
                Some((status, body)) => {
                    log::info!("{peer}: upgrade refused with {status}: {body}");
                    shared.metrics.rejected(Some(status.as_u16()));
                    conn.push_control(plain_response(status, &body), false);
                    conn.flush();
                    linger(conn, false);
                }
                None => {
                    log::info!("{peer}: handshake abandoned ({e})");
                    shared.metrics.rejected(None);
                }
            }
            return None;
        }
        Err(HandshakeError::Interrupted(_)) => {
            log::info!("{peer}: handshake timed out");
            shared.metrics.rejected(None);
            return None;
        }
    };
    // Upgraded: from now on reads block without a deadline (the heartbeat watches liveness).
    let stream = ws.get_mut();
    stream.deadline = None;
    stream.upgraded = true;
    if conn.socket().set_read_timeout(None).is_err() {
        return None;
    }
    if let guard::Identity::Named(name) = identity {
        // From a JWT: the client is this name, and cannot rename itself.
        conn.set_name(&name);
        conn.name_locked.store(true, Ordering::Release);
    }
    match kind {
        Kind::Chat => {
            shared.hub.welcome(conn);
            enter_initial_rooms(conn, shared, &query);
        }
        other => conn.set_kind(other),
    }
    Some(ws)
}

/// The checks every upgrade passes before the 101, cheapest first; see `guard.rs`.
#[allow(clippy::result_large_err)]
fn admit(req: &Request, conn: &Conn, shared: &Shared, ip_slot: &mut IpSlot) -> Result<guard::Identity, ErrorResponse> {
    let cfg = &shared.config;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    // Behind a trusted proxy, limits and tickets apply to the client, not the proxy.
    let ip = guard::client_ip(conn.peer.ip(), header("X-Forwarded-For"), &cfg.trusted_proxies);
    if ip != conn.peer.ip() {
        log::info!("client {} ({}): client address {ip} (X-Forwarded-For)", conn.id, conn.peer);
        ip_slot.move_to(ip);
    }
    let ip_connections = ip_slot.count;
    if shared.is_shutting_down() {
        return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down"));
    }
    // Browsers always send Origin; tools usually do not. A page from another site must not
    // be able to open a socket with this user's credentials (cross-site WebSocket hijacking).
    if let Some(origin) = header("Origin")
        && !shared.allowed_origins.iter().any(|o| o == origin)
    {
        return Err(refusal(StatusCode::FORBIDDEN, "origin not allowed (see --allow-origin)"));
    }
    let mut identity = guard::Identity::Anonymous;
    if cfg.auth_required() {
        let query = req.uri().query().unwrap_or("");
        let ticket = query.split('&').filter_map(|kv| kv.strip_prefix("ticket=")).next();
        let accepted = match ticket {
            Some(ticket) => shared.tickets.redeem(ticket, ip),
            None => guard::token_from(query, header("Authorization"), header("Cookie"))
                .and_then(|c| guard::authenticate(&c, cfg.token.as_deref(), cfg.jwt_secret.as_deref())),
        };
        match accepted {
            Some(who) => identity = who,
            None => return Err(refusal(StatusCode::UNAUTHORIZED, "missing, wrong, expired or used credentials")),
        }
    }
    if !shared.ips.allow_upgrade(ip, cfg.upgrade_rate, cfg.upgrade_rate * 2.0) {
        return Err(refusal(StatusCode::TOO_MANY_REQUESTS, "too many connection attempts; slow down"));
    }
    if shared.live_clients() > cfg.max_clients {
        return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "server is full (--max-clients)"));
    }
    if ip_connections > cfg.max_clients_per_ip {
        return Err(refusal(StatusCode::SERVICE_UNAVAILABLE, "too many connections from your address"));
    }
    Ok(identity)
}

fn refusal(status: StatusCode, body: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(format!("{body}\n")));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert("Content-Type", "text/plain; charset=utf-8".parse().expect("static header"));
    headers.insert("Content-Length", (body.len() + 1).into());
    headers.insert("Connection", "close".parse().expect("static header"));
    resp
}

fn plain_response(status: StatusCode, body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    ))
}

fn read_loop(ws: &mut WebSocket<ClientStream>, conn: &Arc<Conn>, shared: &Shared) -> End {
    let chat = conn.kind() == Kind::Chat;
    // Per-client message rate (chat only: /echo is the conformance target and stays raw).
    // Over the rate a message is refused with an error; `burst` refusals in a row close the
    // connection with 1008. The bucket lives on this thread: no lock.
    let (rate, burst) = (shared.config.message_rate, shared.config.message_rate * 2.0);
    let mut bucket = guard::Bucket::new(burst);
    let mut refused_in_a_row = 0.0;
    loop {
        let msg = match ws.read() {
            Ok(msg) => msg,
            Err(e) => return classify(e),
        };
        if ws.get_ref().overflowed {
            return End::Failed(close_code::POLICY, "slow consumer: too much unread data".into());
        }
        // Any frame proves the peer is alive, not just pongs.
        conn.alive.store(true, Ordering::Release);
        if matches!(msg, Message::Text(_) | Message::Binary(_)) && conn.close_queued() {
            // We are closing this client (slow consumer, shutdown): keep reading only to
            // see its Close reply; its requests are no longer acted on.
            continue;
        }
        if chat && matches!(msg, Message::Text(_) | Message::Binary(_)) {
            if !bucket.take(rate, burst, Instant::now()) {
                refused_in_a_row += 1.0;
                if refused_in_a_row >= burst {
                    return End::Failed(close_code::POLICY, "message flood: over the rate limit for too long".into());
                }
                let error = format!("rate limit: at most {rate} messages per second; message dropped");
                if conn.send(error_frame(shared, &error)) == Push::Overflow {
                    shared.hub.close_client(conn, close_code::POLICY, "slow consumer: too much unread data");
                }
                continue;
            }
            refused_in_a_row = 0.0;
        }
        if let Message::Text(t) = &msg {
            count_frame(shared, t.len());
        } else if let Message::Binary(b) = &msg {
            count_frame(shared, b.len());
        }
        let reply = match msg {
            Message::Text(text) if chat => handle_chat(conn, shared, text.as_str()),
            Message::Text(text) => Some(protocol::text_frame(text.as_bytes())),
            Message::Binary(_) if chat => Some(error_frame(shared, "binary frames are not supported; send JSON text")),
            Message::Binary(data) => Some(protocol::binary_frame(&data)),
            Message::Close(frame) => {
                return End::ClientClosed(match frame {
                    Some(f) => format!("code {} {:?}", u16::from(f.code), f.reason.as_str()),
                    None => "no code".into(),
                });
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        };
        if let Some(frame) = reply
            && conn.send(frame) == Push::Overflow
        {
            shared.hub.close_client(conn, close_code::POLICY, "slow consumer: too much unread data");
        }
    }
}

/// Handles one chat request; returns a frame to send back to this client only.
#[inline(never)]
fn handle_chat(conn: &Arc<Conn>, shared: &Shared, text: &str) -> Option<Bytes> {
    let result = match protocol::parse_client(text) {
        Ok(ClientMsg::Message { room, text, r#ref }) => {
            if shared.config.panic_on_text.as_deref() == Some(text.as_str()) {
                panic!("client {}: injected panic (test hook)", conn.id);
            }
            if !shared.hub.is_member(conn, &room) {
                return Some(error_frame_ref(shared, &format!("not in room {room:?}; join it first"), r#ref));
            }
            let submit = Submit {
                room,
                id: conn.id,
                name: conn.name(),
                text,
                reply: Reply::Ws { conn: Arc::clone(conn), r#ref },
            };
            shared.sequencer.submit(submit)
        }
        Ok(ClientMsg::Name { .. }) if conn.name_locked.load(Ordering::Acquire) => {
            Err("your name comes from your login and cannot be changed".to_string())
        }
        Ok(ClientMsg::Name { name }) => {
            let new: Arc<str> = Arc::from(name.as_str());
            let old = conn.set_name(&name);
            shared.hub.announce_rename(conn, &old, &new);
            Ok(())
        }
        Ok(ClientMsg::Join { room }) => shared.hub.join_room(conn, &room),
        Ok(ClientMsg::Leave { room }) => shared.hub.leave_room(conn, &room),
        Ok(ClientMsg::Resume { room, after }) => shared.hub.resume(conn, &room, after, &*shared.store),
        Err(error) => Err(error),
    };
    result.err().map(|error| error_frame(shared, &error))
}

/// Every chat client starts in the lobby. `?resume=ROOM:SEQ[,ROOM:SEQ…]` on the upgrade URL
/// resumes those rooms instead (the lobby too, if listed), exactly like a `resume` request.
fn enter_initial_rooms(conn: &Arc<Conn>, shared: &Shared, query: &str) {
    let mut resumes: Vec<(String, u64)> = vec![];
    for pair in query.split('&').filter_map(|kv| kv.strip_prefix("resume=")) {
        for item in pair.split(',').filter(|s| !s.is_empty()) {
            match item.rsplit_once(':').map(|(r, s)| (r, s.parse::<u64>())) {
                Some((room, Ok(seq))) if protocol::validate_room(room).is_ok() => resumes.push((room.to_string(), seq)),
                _ => {
                    conn.send(error_frame(shared, &format!("bad resume parameter {item:?}; expected ROOM:SEQ")));
                }
            }
        }
    }
    if !resumes.iter().any(|(r, _)| r == protocol::LOBBY)
        && let Err(e) = shared.hub.join_room(conn, protocol::LOBBY)
    {
        conn.send(error_frame(shared, &e));
    }
    for (room, after) in resumes {
        if let Err(e) = shared.hub.resume(conn, &room, after, &*shared.store) {
            conn.send(error_frame(shared, &e));
        }
    }
}

fn count_frame(shared: &Shared, len: usize) {
    shared.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
    shared.metrics.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
}

fn error_frame(shared: &Shared, error: &str) -> Bytes {
    error_frame_ref(shared, error, None)
}

fn error_frame_ref(shared: &Shared, error: &str, r#ref: Option<u64>) -> Bytes {
    shared.metrics.error_replies.fetch_add(1, Ordering::Relaxed);
    ServerMsg::Error { error, r#ref }.to_frame()
}

/// Maps a read error to how the connection ends (and which close code the client gets).
fn classify(e: WsError) -> End {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::ClientClosed("already closed".into()),
        WsError::Io(e) => End::Gone(e.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Gone("closed without a Close frame".into())
        }
        WsError::Capacity(e) => End::Failed(close_code::TOO_BIG, format!("message too big: {e}")),
        WsError::Utf8(_) => End::Failed(close_code::INVALID_DATA, "invalid UTF-8 in a text message".into()),
        WsError::Protocol(e) => End::Failed(close_code::PROTOCOL, format!("protocol error: {e}")),
        other => End::Failed(close_code::INTERNAL, format!("internal error: {other}")),
    }
}

/// Lets queued frames (our Close or a refusal) reach the client, then shuts the write side.
/// With `drain_reads`, also reads and discards until the client closes: closing a socket
/// with unread input makes the kernel send RST, which can destroy our Close frame in the
/// client's receive buffer before it reads it.
#[inline(never)]
fn linger(conn: &Conn, drain_reads: bool) {
    let deadline = Instant::now() + CLOSE_LINGER;
    conn.wait_drained(deadline);
    let socket = conn.socket();
    let _ = socket.shutdown(Shutdown::Write);
    if drain_reads {
        let mut scratch = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match (&*socket).read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// The stream tungstenite reads from and writes to: reads come straight from the socket
/// (with a deadline during the handshake); writes go into the outbox.
struct ClientStream {
    conn: Arc<Conn>,
    /// Handshake deadline; `None` once upgraded.
    deadline: Option<Instant>,
    /// After the upgrade, writes are WebSocket frames (checked for Close); before it, HTTP.
    upgraded: bool,
    /// A write (a pong) did not fit under the outbox cap.
    overflowed: bool,
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.tls() {
            None => self.read_socket(buf),
            Some(tls) => self.read_tls(tls, buf),
        }
    }
}

impl ClientStream {
    /// Not inlined: an idle client blocks in `read`, and the TLS path's locals would make
    /// that frame — resident for every idle connection — bigger for plain ones too.
    #[inline(never)]
    fn read_tls(&self, tls: &parking_lot::Mutex<rustls::ServerConnection>, buf: &mut [u8]) -> io::Result<usize> {
        // TLS: `buf` first receives ciphertext from the socket (read without the TLS lock,
        // so writers are never blocked by this thread waiting for input), which rustls then
        // takes; then it receives the decrypted bytes. The TLS handshake happens here too,
        // driven by the first reads, inside the same handshake deadline.
        loop {
            match tls.lock().reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the client sent close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let n = self.read_socket(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut tls = tls.lock();
            let mut ciphertext = &buf[..n];
            let mut state = Ok(());
            while !ciphertext.is_empty() && state.is_ok() {
                tls.read_tls(&mut ciphertext)?;
                state = tls.process_new_packets().map(|_| ());
            }
            let reply = tls.wants_write();
            drop(tls);
            if reply {
                // Handshake messages, or an alert about the error below.
                self.conn.flush();
            }
            if let Err(e) = state {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
    }

    /// Reads from the socket, within the handshake deadline while there is one.
    fn read_socket(&self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            // A per-read timeout alone would let a client trickle one byte per timeout
            // forever; re-arming it with the time left bounds the whole handshake.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.conn.socket().set_read_timeout(Some(left))?;
        }
        self.conn.socket().read(buf)
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let is_close = self.upgraded && protocol::contains_close_frame(buf);
        // Refused (Closed) means a Close already went out: anything after it is dropped,
        // as RFC 6455 requires. Reporting success keeps tungstenite's state machine going.
        if self.conn.push_control(Bytes::copy_from_slice(buf), is_close) == Push::Overflow {
            // Pongs piling up: the client sends pings but does not read. The read loop
            // closes it with 1008 after this read returns.
            self.overflowed = true;
        }
        // Send at once: tungstenite does not always call flush() after writing (its Close
        // reply path returns early), and pongs should not wait for the next read.
        self.conn.flush();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.flush();
        Ok(())
    }
}
