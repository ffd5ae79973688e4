//! The hub: the shared list of connections and the fan-out of chat events.
//!
//! One `parking_lot::Mutex` guards the list and the message sequence number. Holding it, a
//! broadcaster assigns the next `seq`, serializes and frames the message **once**, and
//! appends that same buffer to every chat client's outbox — memory only, no I/O. Because
//! every broadcast enqueues under the one lock, every client's queue holds messages in the
//! same `seq` order. After releasing the lock the broadcaster flushes each outbox; a flush
//! that finds another thread already writing returns at once (that thread sends our frame
//! too), and one that finds the kernel buffer full parks the socket with the flusher. So a
//! slow receiver never blocks a broadcaster, and the lock is never held during a syscall.
//!
//! A client whose outbox would exceed its byte cap is closed with 1008 ("slow consumer"):
//! removed from the list, sent a Close frame, and given `CLOSE_TIMEOUT` to go away before
//! the heartbeat thread cuts the socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::conn::{Conn, Kind, Push};
use crate::metrics::{Disconnect, Metrics};
use crate::protocol::{self, ServerMsg};

/// How long a client gets to answer a server-initiated Close before its socket is shut.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// WebSocket close codes the server sends (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

/// A server-initiated close whose deadline the heartbeat thread enforces.
pub struct PendingClose {
    pub conn: Weak<Conn>,
    pub deadline: Instant,
}

struct HubState {
    /// Every connection from accept until its thread exits, chat or not. Copy-on-write:
    /// broadcasters clone the `Arc` (one atomic increment) to flush after unlocking, and the
    /// rare join/leave pays for a fresh vector.
    clients: Arc<Vec<Arc<Conn>>>,
    /// `seq` of the next chat message. Only read and bumped under the lock.
    next_seq: u64,
    /// How many of `clients` are chat members (kind `Chat`).
    chat_members: usize,
    /// Set at shutdown: no client joins after this.
    closed: bool,
}

pub struct Hub {
    state: Mutex<HubState>,
    next_id: AtomicU64,
    closing: Sender<PendingClose>,
    metrics: Arc<Metrics>,
    /// Above this many chat members, individual join/leave notices are not broadcast:
    /// each would be one delivery per member, so N arrivals would cost N² deliveries.
    join_notice_limit: usize,
}

impl Hub {
    /// `closing` is the heartbeat thread's queue of close deadlines.
    pub fn new(
        closing: Sender<PendingClose>,
        metrics: Arc<Metrics>,
        join_notice_limit: usize,
    ) -> Self {
        Hub {
            state: Mutex::new(HubState {
                clients: Arc::new(Vec::new()),
                next_seq: 1,
                chat_members: 0,
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            closing,
            metrics,
            join_notice_limit,
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a freshly accepted connection (still handshaking). Returns false at shutdown.
    pub fn add(&self, conn: Arc<Conn>) -> bool {
        let mut st = self.state.lock();
        if st.closed {
            return false;
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

    /// Makes `conn` a chat member: it gets `welcome` first, then everybody else gets `join`.
    /// Both are queued under the lock so no broadcast can slip in before the welcome.
    pub fn join_chat(&self, conn: &Arc<Conn>) {
        let name = conn.name();
        let welcome = ServerMsg::Welcome {
            id: conn.id,
            name: &name,
        }
        .to_frame();
        let join = ServerMsg::Join {
            id: conn.id,
            name: &name,
        }
        .to_frame();
        let (clients, overflowed) = {
            let mut st = self.state.lock();
            conn.set_kind(Kind::Chat);
            st.chat_members += 1;
            conn.push(welcome);
            let overflowed = if st.chat_members <= self.join_notice_limit {
                self.push_to_chat(&st.clients, &join, Some(conn.id))
            } else {
                vec![]
            };
            (st.clients.clone(), overflowed)
        };
        conn.flush();
        self.finish_fan_out(&clients, Some(conn.id), overflowed);
    }

    /// Broadcasts a chat message from `from` to every chat client, sender included.
    /// Returns the `seq` it was given.
    pub fn broadcast_message(&self, from: &Conn, name: &str, text: &str) -> u64 {
        let ts = protocol::now_ms();
        let mut seq = 0;
        self.metrics.messages_in.fetch_add(1, Ordering::Relaxed);
        self.broadcast_with(None, |st| {
            seq = st.next_seq;
            st.next_seq += 1;
            ServerMsg::Message {
                seq,
                id: from.id,
                name,
                text,
                ts,
            }
            .to_frame()
        });
        seq
    }

    /// Tells every chat client (including the renamed one) about a name change.
    pub fn announce_rename(&self, conn: &Conn, old: &str, new: &str) {
        let frame = ServerMsg::Name {
            id: conn.id,
            name: new,
            old,
        }
        .to_frame();
        self.broadcast_with(None, |_| frame);
    }

    /// Removes a connection. If it was a chat member, everybody else is told it left.
    /// Idempotent: returns false if it was already gone.
    pub fn remove(&self, conn: &Conn) -> bool {
        let mut work = vec![];
        let removed = self.remove_one(conn, &mut work);
        self.close_overflowed(work);
        removed
    }

    fn remove_one(&self, conn: &Conn, overflowed: &mut Vec<Arc<Conn>>) -> bool {
        let name = conn.name();
        let leave = ServerMsg::Leave {
            id: conn.id,
            name: &name,
        }
        .to_frame();
        let clients = {
            let mut st = self.state.lock();
            let Some(pos) = st.clients.iter().position(|c| c.id == conn.id) else {
                return false;
            };
            Arc::make_mut(&mut st.clients).remove(pos);
            if conn.kind() != Kind::Chat {
                return true;
            }
            st.chat_members -= 1;
            if st.closed || st.chat_members >= self.join_notice_limit {
                return true;
            }
            overflowed.extend(self.push_to_chat(&st.clients, &leave, None));
            st.clients.clone()
        };
        flush_chat(&clients, None);
        true
    }

    /// Server-initiated close: leave the list, queue a Close frame, and have the heartbeat
    /// thread cut the socket if the client has not gone within `CLOSE_TIMEOUT`.
    pub fn close_client(&self, conn: &Arc<Conn>, code: u16, reason: &str) {
        let mut work = vec![];
        self.close_one(conn, code, reason, &mut work);
        self.close_overflowed(work);
    }

    fn close_one(&self, conn: &Arc<Conn>, code: u16, reason: &str, work: &mut Vec<Arc<Conn>>) {
        conn.set_close_reason(match code {
            close_code::POLICY => Disconnect::SlowConsumer,
            close_code::GOING_AWAY => Disconnect::Shutdown,
            close_code::TOO_BIG => Disconnect::TooBig,
            close_code::PROTOCOL => Disconnect::Protocol,
            close_code::INVALID_DATA => Disconnect::InvalidUtf8,
            _ => Disconnect::Error,
        });
        self.remove_one(conn, work);
        if conn.push_close(code, reason) {
            conn.flush();
            let _ = self.closing.send(PendingClose {
                conn: Arc::downgrade(conn),
                deadline: Instant::now() + CLOSE_TIMEOUT,
            });
        }
    }

    /// Closes slow consumers found during a fan-out. Their `leave` notices may overflow yet
    /// other clients, so this is a work list, not recursion.
    fn close_overflowed(&self, mut work: Vec<Arc<Conn>>) {
        while let Some(conn) = work.pop() {
            log::warn!(
                "client {} ({}): outgoing queue over its cap, closing 1008 (slow consumer)",
                conn.id,
                conn.peer
            );
            self.close_one(
                &conn,
                close_code::POLICY,
                "slow consumer: too much unread data",
                &mut work,
            );
        }
    }

    /// Under the lock, `build` makes the frame (and may update state, e.g. take a `seq`);
    /// it is queued for every chat client but `skip`. Flushing happens after unlocking.
    fn broadcast_with(&self, skip: Option<u64>, build: impl FnOnce(&mut HubState) -> Bytes) {
        let (clients, overflowed) = {
            let mut st = self.state.lock();
            let frame = build(&mut st);
            let overflowed = self.push_to_chat(&st.clients, &frame, skip);
            (st.clients.clone(), overflowed)
        };
        self.finish_fan_out(&clients, skip, overflowed);
    }

    fn finish_fan_out(&self, clients: &[Arc<Conn>], skip: Option<u64>, overflowed: Vec<Arc<Conn>>) {
        flush_chat(clients, skip);
        if !overflowed.is_empty() {
            self.close_overflowed(overflowed);
        }
    }

    /// Queues `frame` for every chat client but `skip` (memory only: called under the
    /// lock); returns those over their cap.
    fn push_to_chat(
        &self,
        clients: &[Arc<Conn>],
        frame: &Bytes,
        skip: Option<u64>,
    ) -> Vec<Arc<Conn>> {
        let mut overflowed = Vec::new();
        let mut delivered = 0;
        for conn in clients {
            if conn.kind() != Kind::Chat || Some(conn.id) == skip {
                continue;
            }
            match conn.push(frame.clone()) {
                Push::Queued => delivered += 1,
                Push::Overflow => overflowed.push(Arc::clone(conn)),
                Push::Closed => {}
            }
        }
        self.metrics.broadcasts.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
        overflowed
    }

    /// Shutdown: no more joins; every upgraded client is sent Close `code`, and connections
    /// still in the handshake are cut. Returns how many connections there were.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
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

fn flush_chat(clients: &[Arc<Conn>], skip: Option<u64>) {
    for conn in clients {
        if conn.kind() == Kind::Chat && Some(conn.id) != skip {
            conn.flush();
        }
    }
}
