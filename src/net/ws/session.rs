//! A WebSocket session: the upgrade of a request head that `entry/connection.rs` has read
//! (decided in `upgrade.rs`), then a blocking read loop until the connection ends, then
//! cleanup — all on the connection's own thread.
//!
//! This thread is the only reader of its socket and the only user of its tungstenite state
//! machine. It never writes to the socket itself: everything it (or tungstenite, for pongs
//! and Close replies) sends goes into the connection's outbox (see `conn/outbox.rs`), the same
//! queue broadcasts use, so frames from different threads never interleave.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, WebSocket, error::ProtocolError};

use crate::chat::hub::CloseCode;
use crate::conn::frames;
use crate::conn::{Conn, Kind};
use crate::metrics::Disconnect;
use crate::net::access::auth::{self, Identity};
use crate::net::access::frame_rate::{FrameBudget, Verdict};
use crate::net::access::per_ip;
use crate::net::entry::head::Head;
use crate::net::entry::stream::ConnStream;
use crate::net::shared::Shared;
use crate::net::ws::chat::{self, TypingThrottle, error_frame, handle_chat, handle_plain};
use crate::net::ws::upgrade::{Admitted, upgrade};

/// tungstenite's read buffer per connection. Its default is 128 KiB, which for 10,000 idle
/// clients would be over a GiB; and tungstenite zero-fills the whole buffer before every
/// read, so all of it is resident for every client. Chat frames are small: 1 KiB holds a
/// typical message in one read, and larger ones simply take several.
const READ_BUFFER_BYTES: usize = 1024;

/// How the read loop ended.
enum End {
    /// The client sent a Close frame (possibly answering ours): its code and reason.
    ClientClosed(String),
    /// The client broke the protocol; we close with this code and reason.
    Failed(CloseCode, String),
    /// The TCP connection is gone (EOF, reset, or shut down by the heartbeat/shutdown).
    Gone(String),
}

/// Runs a WebSocket session on `stream`, whose request `head` asked for an upgrade. `tail`:
/// bytes the client sent after the head (frames it did not wait to send).
pub fn run(mut stream: ConnStream, head: Head, tail: Vec<u8>, shared: &Arc<Shared>) {
    let conn = Arc::clone(&stream.conn);
    let (id, peer) = (conn.id, conn.peer);
    // Behind a trusted proxy, limits and tickets apply to the client, not the proxy.
    let ip = per_ip::client_ip(peer.ip(), head.header("X-Forwarded-For"), &shared.chat.config.trusted_proxies);
    if ip != per_ip::address_of(peer.ip()) {
        log::info!("client {id} ({peer}): client address {ip} (X-Forwarded-For)");
    }
    let ip_slot = IpSlot { shared, ip, count: shared.ips.connect(ip) };
    let session = shared.enter_session();
    let mut admitted = match upgrade(&conn, &head, ip, ip_slot.count, session.count, shared) {
        Ok(admitted) => admitted,
        Err((status, text)) => {
            shared.refuse(&conn, "upgrade", status, &text, "");
            conn.close_gently(true);
            return;
        }
    };
    drop(head);
    let _user = admitted.user.take();
    conn.set_kind(admitted.kind);
    conn.set_user(Arc::clone(&admitted.user_id));
    conn.set_address(ip);
    if admitted.kind.is_chat()
        && let Err(e) = take_name(&conn, &admitted.identity, shared)
    {
        // The store could not reserve a JWT user's name: no session under a name that
        // may be someone else's.
        log::warn!("client {id} ({peer}): {e}");
        conn.push_close(CloseCode::Error, "cannot reserve your name; try again");
        conn.close_gently(true);
        return;
    }
    if !shared.chat.hub.add(Arc::clone(&conn)) {
        // Shutting down between the 101 and here.
        conn.push_close(CloseCode::Away, "server shutting down");
        conn.close_gently(true);
        return;
    }
    // Removes us from the hub on every exit path, panics included.
    let _membership = Membership { shared, conn: &conn };
    // Upgraded: from now on reads block without a deadline (the heartbeat watches liveness).
    stream.deadline = None;
    stream.upgraded = true;
    // The first quiet spell of REST_AFTER gives the handshake's stack pages back (see
    // `ConnStream::rest`); reads block without a deadline from then on.
    if conn.socket().set_read_timeout(Some(crate::conn::threads::REST_AFTER)).is_err() {
        return;
    }
    let mut ws = WebSocket::from_partially_read(stream, tail, Role::Server, Some(ws_config(shared)));
    // What this client's frames may cost (every endpoint; scripts/autobahn.sh lifts it for
    // /echo). Rooms resumed from the URL spend it too.
    let mut budget = FrameBudget::new(&shared.chat.config, ip);
    let access = auth::RoomAccess::of(&admitted.identity);
    start_chat(&conn, &admitted, ip, &mut budget, &access, shared);
    // What the upgrade decided is in the connection now; an idle session keeps none of it.
    drop(admitted);
    let kind = conn.kind();
    let endpoint = match kind {
        Kind::Chat => "/ws",
        Kind::Plain => "/ (plain text)",
        _ => "/echo",
    };
    log::info!("client {id} ({peer}): connected to {endpoint}");
    shared.chat.metrics.connections.fetch_add(1, Ordering::Relaxed);

    let end = read_loop(&mut ws, &conn, &mut budget, &access, ip, shared);
    // Leave the list first, so the `leave` notice goes out now rather than after lingering.
    shared.chat.hub.remove(&conn);
    conn.set_close_reason(match &end {
        End::ClientClosed(_) => Disconnect::ClientClose,
        End::Gone(_) => Disconnect::Gone,
        End::Failed(code, why) => crate::chat::hub::disconnect_reason(*code, why),
    });
    shared.chat.metrics.disconnected(conn.close_reason().unwrap_or(Disconnect::Gone));
    match end {
        End::ClientClosed(how) => {
            // tungstenite has queued its Close reply; writing it goes into our outbox, which
            // drops it if we had already sent a Close of our own.
            let _ = ws.flush();
            log::info!("client {id} ({peer}): closed by client ({how})");
            conn.close_gently(false);
        }
        End::Failed(code, reason) => {
            log::info!("client {id} ({peer}): closing with {code}: {reason}");
            if conn.push_close(code, &reason) {
                conn.flush();
            }
            conn.close_gently(true);
        }
        End::Gone(why) => log::info!("client {id} ({peer}): disconnected ({why})"),
    }
}

/// The connection's first name, held from before it joins the hub until it leaves: a JWT
/// user's own (reserved for its `sub`; a guest showing it is renamed), or a guest's default
/// `guest-XXXXXX` (from its id, so the same guest comes back under the same one).
fn take_name(conn: &Arc<Conn>, identity: &Identity, shared: &Shared) -> Result<(), String> {
    let (hub, store) = (&shared.chat.hub, &*shared.chat.store);
    let user = conn.user();
    match identity {
        Identity::Named { name: claim, .. } => {
            let (name, taken) = hub.names.reserve(&user, claim, store)?;
            conn.set_name(&name);
            conn.name_locked.store(true, Ordering::Release);
            if taken {
                hub.take_name_back(&user, &crate::chat::protocol::name_key(&name), store);
            }
        }
        Identity::Anonymous => {
            let base = format!("guest-{}", crate::chat::names::short(&user));
            conn.set_name(&hub.names.hold_first_free(&user, &base, store));
        }
    }
    Ok(())
}

/// After the `101`: the JWT's lifetime, the welcome, the first rooms.
#[inline(never)]
fn start_chat(
    conn: &Arc<Conn>,
    admitted: &Admitted,
    ip: std::net::IpAddr,
    budget: &mut FrameBudget,
    rooms: &auth::RoomAccess,
    shared: &Shared,
) {
    if let Identity::Named { expires, .. } = &admitted.identity {
        let expires = *expires;
        // The token's lifetime holds on the connection too: closed (4001) when it ends.
        let left_ms = expires.saturating_mul(1000).saturating_sub(crate::clock::now_ms());
        let at = Instant::now() + std::time::Duration::from_millis(left_ms.min(10 * 365 * 86_400_000));
        shared.chat.hub.close_when_expired(conn, at);
    }
    match admitted.kind {
        Kind::Chat => {
            shared.chat.hub.welcome(conn, admitted.credential.as_deref(), &rooms.role);
            chat::enter_initial_rooms(conn, shared, &admitted.query, ip, budget, rooms);
        }
        Kind::Plain => chat::enter_plain(conn, shared, &admitted.query, rooms),
        Kind::Echo | Kind::Handshaking => {}
    }
}

/// Counts this session against its client's address until the thread ends.
struct IpSlot<'a> {
    shared: &'a Shared,
    ip: std::net::IpAddr,
    /// Sessions from this address, this one included, when it arrived.
    count: usize,
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
        self.shared.chat.hub.remove(self.conn);
        self.conn.finished.store(true, Ordering::Release);
    }
}

fn ws_config(shared: &Shared) -> WebSocketConfig {
    let max = shared.chat.config.max_message_bytes;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // 0: hand every frame to our stream at once; the outbox is the only buffer.
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

fn read_loop(
    ws: &mut WebSocket<ConnStream>,
    conn: &Arc<Conn>,
    budget: &mut FrameBudget,
    rooms: &auth::RoomAccess,
    ip: std::net::IpAddr,
    shared: &Shared,
) -> End {
    let chat = conn.kind().is_chat();
    let plain = conn.kind() == Kind::Plain;
    let mut typing = TypingThrottle::default();
    loop {
        let msg = match ws.read() {
            Ok(msg) => msg,
            // The first quiet spell (`ConnStream::rest`): the handshake was the deepest
            // this thread will go for a while, and an idle client keeps only the few KiB
            // its blocking read needs. Released from here, near the top of the stack.
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                crate::conn::threads::release_unused_stack();
                continue;
            }
            Err(e) => return classify(e),
        };
        if ws.get_ref().overflowed {
            return End::Failed(CloseCode::Policy, crate::chat::hub::SLOW_CONSUMER.into());
        }
        // Any frame proves the peer is alive, not just pongs.
        conn.alive.store(true, Ordering::Release);
        if matches!(msg, Message::Ping(_))
            && let Err(why) = budget.ping()
        {
            return End::Failed(CloseCode::Policy, why);
        }
        if matches!(msg, Message::Text(_) | Message::Binary(_)) && conn.close_queued() {
            // We are closing this client (slow consumer, shutdown): keep reading only to
            // see its Close reply; its requests are no longer acted on.
            continue;
        }
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            match budget.frame(&shared.ips, chat) {
                Verdict::Pass => {}
                Verdict::Refuse(error) => {
                    shared.chat.hub.send_or_close(conn, error_frame(shared, conn, &error));
                    continue;
                }
                Verdict::Close(why) => return End::Failed(CloseCode::Policy, why),
            }
        }
        if let Message::Text(t) = &msg {
            count_frame(shared, t.len());
        } else if let Message::Binary(b) = &msg {
            count_frame(shared, b.len());
        }
        let reply = match msg {
            Message::Text(text) if plain => handle_plain(conn, shared, text.as_str()),
            Message::Binary(_) if plain => {
                Some(error_frame(shared, conn, "binary frames are not supported; send text"))
            }
            // A bug in handling one request ends this client with 1011 (its thread unwinds
            // no further than here; parking_lot locks do not poison), never anyone else.
            Message::Text(text) if chat => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handle_chat(conn, shared, text.as_str(), &mut typing, rooms, ip)
                })) {
                    Ok(reply) => reply,
                    Err(_) => return End::Failed(CloseCode::Error, "internal error".into()),
                }
            }
            Message::Text(text) => Some(frames::text_frame(text.as_bytes())),
            Message::Binary(_) if chat => {
                Some(error_frame(shared, conn, "binary frames are not supported; send JSON text"))
            }
            Message::Binary(data) => Some(frames::binary_frame(&data)),
            Message::Close(frame) => {
                return End::ClientClosed(match frame {
                    Some(f) => format!("code {} {:?}", u16::from(f.code), f.reason.as_str()),
                    None => "no code".into(),
                });
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        };
        if let Some(frame) = reply {
            shared.chat.hub.send_or_close(conn, frame);
        }
    }
}

fn count_frame(shared: &Shared, len: usize) {
    shared.chat.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
    shared.chat.metrics.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
}

/// Maps a read error to how the connection ends (and which close code the client gets).
fn classify(e: WsError) -> End {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::ClientClosed("already closed".into()),
        WsError::Io(e) => End::Gone(e.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Gone("closed without a Close frame".into())
        }
        WsError::Capacity(e) => End::Failed(CloseCode::Size, format!("message too big: {e}")),
        WsError::Utf8(_) => End::Failed(CloseCode::Invalid, "invalid UTF-8 in a text message".into()),
        WsError::Protocol(e) => End::Failed(CloseCode::Protocol, format!("protocol error: {e}")),
        other => End::Failed(CloseCode::Error, format!("internal error: {other}")),
    }
}
