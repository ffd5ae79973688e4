//! The hub: the shared list of connections, the rooms, and the fan-out of chat events.
//!
//! One `parking_lot::Mutex` guards the connection list and every room's member list. A
//! broadcast takes it, appends one pre-framed buffer (shared, reference-counted) to each
//! member's outbox — memory only, no I/O — and releases it; only then are the outboxes
//! flushed. Chat messages are broadcast by the sequencer thread alone, in `seq` order, so
//! every member's queue holds a room's messages in the same order. A flush that finds
//! another thread already writing returns at once (that thread sends our frame too), and
//! one that finds the kernel buffer full parks the socket with the flusher: a slow receiver
//! never blocks a broadcaster, and the lock is never held during a syscall.
//!
//! A client whose outbox would exceed its byte cap is closed with 1008 ("slow consumer"):
//! removed from the list, sent a Close frame, and given `CLOSE_TIMEOUT` to go away before
//! the heartbeat thread cuts the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::chat::names::Names;
use crate::chat::room_index::{RoomIndex, RoomSummary};
use crate::conn::{Conn, Kind, Push};
use crate::metrics::{Disconnect, Metrics};

mod broadcast;
mod cluster;
mod conversations;
mod notices;
mod people;
mod resume;
mod rooms;
mod sanctions;

pub use sanctions::KICKED_CODE;

use rooms::Room;

/// How long a client gets to answer a server-initiated Close before its socket is shut.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Recent message frames kept per room with members (or a resume in progress), so a
/// resuming client can catch up on what was broadcast while it read history from the
/// store, without a second store query. At most this many frames…
const RECENT_FRAMES: usize = 256;
/// …and this many bytes of them. The cache is only a shortcut (a resume falls back to the
/// store), so it is small; a room nobody is in keeps none.
const RECENT_BYTES: usize = 64 * 1024;

/// Names listed in a `presence` (plus the total `count`). A full list of a crowd would be a
/// frame of hundreds of KiB for every newcomer — O(N²) work and memory while a crowd
/// arrives, and heap fragmentation that never goes away.
pub const PRESENCE_LIST_MAX: usize = 100;

/// Messages read from the store per query while replaying.
const REPLAY_PAGE: usize = 500;

/// The reason a slow consumer's Close frame gives.
pub const SLOW_CONSUMER: &str = "slow consumer: too much unread data";

/// The close codes the server sends (RFC 6455 §7.4.1) are tungstenite's [`CloseCode`]:
/// `Away` (1001, shutdown), `Protocol` (1002), `Invalid` (1007, bad UTF-8), `Policy` (1008,
/// slow consumer or flood), `Size` (1009), `Error` (1011); and two of the private range:
/// 4001 (token expired) and 4003 (closed by a moderator).
pub use tungstenite::protocol::frame::coding::CloseCode;

/// Why a connection we close with `code` ends, for the disconnect counters: the one mapping
/// every place that closes a connection uses.
pub fn disconnect_reason(code: CloseCode, reason: &str) -> Disconnect {
    match code {
        CloseCode::Policy if reason.starts_with("slow") => Disconnect::SlowConsumer,
        CloseCode::Policy => Disconnect::RateLimit,
        CloseCode::Away => Disconnect::Shutdown,
        CloseCode::Size => Disconnect::TooBig,
        CloseCode::Protocol => Disconnect::Protocol,
        CloseCode::Invalid => Disconnect::InvalidUtf8,
        CloseCode::Library(KICKED_CODE) => Disconnect::Moderator,
        _ => Disconnect::Error,
    }
}

/// A deadline the heartbeat thread enforces on a connection.
pub struct PendingClose {
    pub conn: Weak<Conn>,
    pub deadline: Instant,
    pub why: Deadline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// We sent a Close: cut the connection if the client has not answered by then.
    CloseReply,
    /// The connection's credential (a JWT) stops being valid then: close it with
    /// [`TOKEN_EXPIRED_CODE`].
    TokenExpiry,
    /// Not a connection's: the rooms' queued `join`/`leave` notices go out then
    /// ([`Hub::send_all_notices`]; see `notices.rs`).
    Notices,
}

/// Close code (private range, RFC 6455 §7.4.2) for a connection whose JWT expired: log in
/// again, or get a fresh ticket, and reconnect (resuming loses nothing).
pub const TOKEN_EXPIRED_CODE: u16 = 4001;
pub const TOKEN_EXPIRED: &str = "token expired: reconnect with a fresh token or ticket";

/// Room budgets (`--max-rooms`, `--max-rooms-per-client`).
#[derive(Clone, Copy, Debug)]
pub struct RoomLimits {
    /// Rooms on this server (with members or history). Past it, new rooms are refused.
    pub max_rooms: usize,
    /// Rooms one connection may be in at once.
    pub per_client: usize,
    /// Direct-message conversations on this server (`--max-conversations`).
    pub max_conversations: usize,
}

struct HubState {
    /// Rooms with `join`/`leave` notices waiting for the tick (see `notices.rs`).
    noticing: Vec<String>,
    /// Every connection from accept until its thread exits, chat or not (the heartbeat and
    /// shutdown walk this).
    clients: Arc<Vec<Arc<Conn>>>,
    /// The chat connections of each user (JSON and plain text), for direct messages: a
    /// `dm` finds its two users' connections here instead of scanning every client.
    users: HashMap<Arc<str>, Vec<Arc<Conn>>>,
    rooms: HashMap<String, Room>,
    /// Set at shutdown: no client joins after this.
    closed: bool,
}

pub struct Hub {
    state: Mutex<HubState>,
    next_id: AtomicU64,
    closing: Sender<PendingClose>,
    metrics: Arc<Metrics>,
    /// Above this many members in a room, individual join/leave notices are not broadcast:
    /// each would be one delivery per member, so N arrivals would cost N² deliveries.
    join_notice_limit: usize,
    /// With the backplane: members per room on the other instances (one [`RemoteMember`]
    /// per user), replaced about once a second by the backplane reader. Read for presence
    /// lists and counts. Lock order: after `state`.
    remote: Mutex<HashMap<String, Vec<RemoteMember>>>,
    /// The room listing, readable without `state`. Lock order: after `state`.
    index: RoomIndex,
    limits: RoomLimits,
    /// The direct-message conversations this server knows, and who started them. Lock
    /// order: alone (never held with another lock).
    conversations: Mutex<conversations::Conversations>,
    /// Who holds which display name (see `chat/names.rs`). Lock order: after `state`.
    pub names: Names,
}

/// A member of a room on another instance: (connection id, user id, display name).
pub type RemoteMember = (u64, String, String);

impl Hub {
    /// `closing` is the heartbeat thread's queue of close deadlines.
    pub fn new(
        closing: Sender<PendingClose>,
        metrics: Arc<Metrics>,
        join_notice_limit: usize,
        limits: RoomLimits,
    ) -> Self {
        Hub {
            state: Mutex::new(HubState {
                clients: Arc::new(Vec::new()),
                users: HashMap::new(),
                rooms: HashMap::new(),
                noticing: Vec::new(),
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            closing,
            metrics,
            join_notice_limit,
            remote: Mutex::new(HashMap::new()),
            index: RoomIndex::default(),
            limits,
            conversations: Mutex::new(conversations::Conversations::default()),
            names: Names::default(),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Client ids start above `base` (cluster mode: ids must not collide across instances).
    pub fn set_id_base(&self, base: u64) {
        self.next_id.store(base + 1, Ordering::Relaxed);
    }

    /// The seq of the last message broadcast in `room` (0: none known).
    pub fn last_seq(&self, room: &str) -> u64 {
        self.state.lock().rooms.get(room).map_or(0, |r| r.last_seq)
    }

    /// Adds a freshly accepted connection (still handshaking). Returns false at shutdown.
    pub fn add(&self, conn: Arc<Conn>) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
        }
        let user = conn.user();
        if conn.kind().is_chat() && !user.is_empty() {
            st.users.entry(user).or_default().push(Arc::clone(&conn));
        }
        Arc::make_mut(&mut st.clients).push(conn);
        true
    }

    /// Number of connections, handshaking ones included.
    pub fn len(&self) -> usize {
        self.state.lock().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current list, for the heartbeat. Do I/O on it only after this returns.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Conn>>> {
        self.state.lock().clients.clone()
    }

    /// Rooms with members or messages since start, for `GET /api/rooms`. Read from the
    /// index: never walks the rooms under the hub lock, so it never delays a message.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        self.index.list()
    }

    /// (room, members) for every room with members, for `/metrics` (also from the index).
    pub fn occupied_rooms(&self) -> Vec<(String, usize)> {
        self.index.occupied()
    }

    /// Records the last stored seq of rooms known to the store (at start-up), so they are
    /// listed and resumes know where live numbering continues.
    pub fn seed_rooms(&self, last: &HashMap<String, u64>) {
        let mut st = self.state.lock();
        // Conversations are not rooms: nobody joins them, and no listing shows them.
        self.seed_conversations(last.keys().filter(|k| crate::chat::protocol::is_conversation(k)));
        for (room, seq) in last.iter().filter(|(room, _)| !crate::chat::protocol::is_conversation(room)) {
            if let Ok(r) = self.room(&mut st, room, true) {
                r.last_seq = r.last_seq.max(*seq);
                r.stats.last_seq.store(r.last_seq, Ordering::Relaxed);
            }
        }
    }

    /// Closes `conn` with [`TOKEN_EXPIRED_CODE`] at `at`, when its credential expires.
    pub fn close_when_expired(&self, conn: &Arc<Conn>, at: Instant) {
        let _ =
            self.closing.send(PendingClose { conn: Arc::downgrade(conn), deadline: at, why: Deadline::TokenExpiry });
    }

    /// Whether `conn` is a member of `room`.
    pub fn is_member(&self, conn: &Conn, room: &str) -> bool {
        conn.rooms.lock().iter().any(|r| r == room)
    }

    /// Removes a connection from the list and from every room (each room is told).
    /// Idempotent: returns false if it was already gone.
    pub fn remove(&self, conn: &Conn) -> bool {
        {
            let mut st = self.state.lock();
            let Some(pos) = st.clients.iter().position(|c| c.id == conn.id) else {
                return false;
            };
            Arc::make_mut(&mut st.clients).remove(pos);
            let user = conn.user();
            if let Some(conns) = st.users.get_mut(&user) {
                conns.retain(|c| c.id != conn.id);
                if conns.is_empty() {
                    st.users.remove(&user);
                }
            }
            // Its name is free again (held since the upgrade; see `ws_session.rs`).
            if conn.kind().is_chat() && !user.is_empty() {
                self.names.release(&user, &conn.name());
            }
            let rooms = conn.rooms.lock().clone();
            for room in rooms {
                self.detach(&mut st, conn, &room, true);
            }
        }
        true
    }

    /// Queues and sends `frame` to one client; a client over its byte cap is closed as a
    /// slow consumer (1008). The one place that rule is applied to a single frame.
    pub fn send_or_close(&self, conn: &Arc<Conn>, frame: Bytes) {
        if conn.send(frame) == Push::Overflow {
            self.close_client(conn, CloseCode::Policy, SLOW_CONSUMER);
        }
    }

    /// Server-initiated close: leave the list, queue a Close frame, and have the heartbeat
    /// thread cut the socket if the client has not gone within `CLOSE_TIMEOUT`.
    pub fn close_client(&self, conn: &Arc<Conn>, code: CloseCode, reason: &str) {
        conn.set_close_reason(disconnect_reason(code, reason));
        self.remove(conn);
        if code == CloseCode::Policy {
            // A slow consumer will not read its backlog before its close deadline: give the
            // memory back now (the budgets see it at once), keep only what is mid-write.
            conn.shed();
        }
        if conn.push_close(code, reason) {
            conn.flush();
            let _ = self.closing.send(PendingClose {
                conn: Arc::downgrade(conn),
                deadline: Instant::now() + CLOSE_TIMEOUT,
                why: Deadline::CloseReply,
            });
        }
    }

    /// Closes slow consumers found during a fan-out. One client over its cap may overflow
    /// several times in one fan-out (a batch of messages): each is closed once. (Their
    /// `leave` notices wait for the tick, so closing one cannot overflow another here.)
    fn close_overflowed(&self, mut work: Vec<Arc<Conn>>) {
        work.sort_by_key(|c| c.id);
        work.dedup_by_key(|c| c.id);
        for conn in work {
            log::warn!("client {} ({}): outgoing queue over its cap, closing 1008 (slow consumer)", conn.id, conn.peer);
            self.close_client(&conn, CloseCode::Policy, SLOW_CONSUMER);
        }
    }

    fn finish_fan_out(&self, clients: &[Arc<Conn>], skip: Option<u64>, overflowed: Vec<Arc<Conn>>) {
        flush_all(clients, skip);
        if !overflowed.is_empty() {
            self.close_overflowed(overflowed);
        }
    }

    /// Queues a JSON frame (a notice) for every JSON chat client in `clients` but `skip`
    /// (memory only: called under the lock); returns those over their cap. Plain-text
    /// clients get chat messages only.
    fn push_to(&self, clients: &[Arc<Conn>], frame: &Bytes, skip: Option<u64>) -> Vec<Arc<Conn>> {
        self.push_each(clients, |conn| (conn.kind() == Kind::Chat && Some(conn.id) != skip).then(|| frame.clone()))
    }

    /// Queues for each of `clients` the frame `pick` gives it (`None`: nothing), counting
    /// the broadcast and its deliveries; returns those over their cap.
    fn push_each(&self, clients: &[Arc<Conn>], mut pick: impl FnMut(&Conn) -> Option<Bytes>) -> Vec<Arc<Conn>> {
        let mut overflowed = Vec::new();
        let mut delivered = 0;
        for conn in clients {
            let Some(frame) = pick(conn) else { continue };
            match conn.push(frame) {
                Push::Queued => delivered += 1,
                Push::Overflow => overflowed.push(Arc::clone(conn)),
                Push::Closed => {}
            }
        }
        self.metrics.broadcasts.fetch_add(1, Ordering::Relaxed);
        self.metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
        overflowed
    }

    /// Shutdown: no more joins; every upgraded client is sent Close `code`, and connections
    /// still in the handshake are cut. Returns how many connections there were.
    pub fn close_all(&self, code: CloseCode, reason: &str) -> usize {
        let clients = {
            let mut st = self.state.lock();
            st.closed = true;
            st.clients.clone()
        };
        for conn in clients.iter() {
            conn.set_close_reason(Disconnect::Shutdown);
            if conn.kind() == Kind::Handshaking {
                conn.terminate();
            } else if conn.push_close(code, reason) {
                conn.flush();
            }
        }
        clients.len()
    }

    /// Cuts every remaining socket (the end of the shutdown grace period).
    pub fn terminate_all(&self) {
        for conn in self.snapshot().iter() {
            conn.terminate();
        }
    }
}

fn flush_all(clients: &[Arc<Conn>], skip: Option<u64>) {
    for conn in clients {
        if conn.kind().is_chat() && Some(conn.id) != skip {
            conn.flush();
        }
    }
}
