//! One WebSocket connection as the rest of the server sees it: an id, the socket, and the
//! outbox through which **every** byte sent to that socket passes.
//!
//! Why an outbox instead of a writer thread per client: a second thread per client doubles the
//! thread count (this machine tops out near 16k threads) and waking it costs more than the
//! write itself. Instead, whoever has something to send (a broadcaster, the heartbeat, the
//! client's own thread) appends pre-framed bytes to the queue and then tries to become the
//! queue's single *writer*. The writer sends with `MSG_DONTWAIT`, so it never blocks: if the
//! kernel's send buffer is full, the rest waits in the queue and the socket is handed to the
//! flusher thread, which finishes the job when epoll says the socket is writable again.
//!
//! Invariants:
//! - At most one thread writes to the socket at a time (`Writer::Busy` / `Writer::Parked`
//!   mark the owner), so frames never interleave.
//! - Bytes leave in the order they were queued.
//! - Nothing is queued after a Close frame (RFC 6455 §5.5.1).
//! - Queued bytes never exceed `max_queued` (plus one Close frame): a client that lets them
//!   pile up is closed with 1008 by the caller that saw [`Push::Overflow`].
//!
//! With TLS (`--tls-cert`), the queue still holds plain WebSocket frames (a broadcast is
//! framed once for everyone); the writer encrypts them with this connection's rustls state
//! as it sends, at most `send::TLS_CHUNK` ahead of what the kernel took. The rustls state is
//! shared with the client thread, which decrypts what it reads, under its own lock (`tls`),
//! taken after `out` when both are needed and never held across a blocking call.

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::conn::flusher::{Flushed, Flusher, Parked};
use crate::conn::frames;
use crate::conn::unsent::QueueBudget;
use crate::metrics::{Disconnect, Metrics};
use tungstenite::protocol::frame::coding::CloseCode;

/// How long a closing connection may take to drain its last bytes (our Close frame, a
/// refusal) before the socket is shut anyway.
pub const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// [`Conn::send_blocking`] queues this much of a response at a time.
const BLOCKING_CHUNK: usize = 64 * 1024;

/// Queue slots an idle outbox keeps allocated (32 bytes each).
const KEEP_QUEUE_SLOTS: usize = 16;

/// What the connection is used for; decided by the path at the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Still in the HTTP upgrade: receives nothing.
    Handshaking = 0,
    /// `/ws`: receives broadcasts.
    Chat = 1,
    /// `/echo`: receives only its own messages back.
    Echo = 2,
    /// `/`: a plain-text chat client (the tutorials' own page): in the lobby only, sends
    /// and receives bare message text, never JSON.
    Plain = 3,
}

impl Kind {
    /// A chat member (JSON or plain text): receives its rooms' messages.
    pub fn is_chat(self) -> bool {
        matches!(self, Kind::Chat | Kind::Plain)
    }
}

/// Result of queueing a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued; call [`Conn::flush`] (outside any shared lock) to send it.
    Queued,
    /// Not queued: it would exceed the byte cap. The caller closes the client with 1008.
    Overflow,
    /// Not queued: the connection is closing or dead; nothing more can go out.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// Nobody is writing; the next `flush` takes over.
    Idle,
    /// A thread is inside `write_queued` and owns the socket's write side.
    Busy,
    /// The kernel buffer was full; the flusher thread owns the socket until it drains.
    Parked,
}

struct Outbox {
    /// Frames waiting to be written, oldest first. The first may be partly written already
    /// (`Bytes::advance` drops the sent prefix without copying).
    queue: VecDeque<Bytes>,
    /// An empty deque kept to swap with `queue`, so a writer can take the whole batch out of
    /// the lock without allocating.
    spare: VecDeque<Bytes>,
    /// Bytes in `queue` plus bytes a writer has taken out but not yet sent.
    queued_bytes: usize,
    writer: Writer,
    /// A Close frame has been queued; later frames are refused.
    close_queued: bool,
    /// The socket failed (reset, broken pipe); everything is dropped.
    dead: bool,
}

impl Outbox {
    /// Nothing left to send: empty and no writer mid-batch, or the socket is dead.
    fn is_drained(&self) -> bool {
        self.dead || (self.queue.is_empty() && self.writer == Writer::Idle)
    }
}

/// A connection's shared state. Held in `Arc`s by its own thread, the hub's client list, the
/// flusher (while parked) and the heartbeat (weakly, while a close is pending).
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    /// The only file descriptor for this connection: the client thread reads from it through
    /// `&TcpStream`, writers send through the outbox. (No `try_clone`: a dup per client would
    /// double the fd count, and `ulimit -n` is a real limit here.)
    socket: TcpStream,
    /// TLS state (with `--tls-cert`): the client thread decrypts under it, the writer
    /// encrypts under it. Lock order: `out`, then `tls`. Boxed: a rustls connection is over
    /// a KiB, which plain connections should not carry.
    tls: Option<Box<Mutex<rustls::ServerConnection>>>,
    out: Mutex<Outbox>,
    /// Signalled when the outbox becomes empty or dead; the client thread waits on it to let a
    /// final Close frame drain before it closes the socket.
    drained: Condvar,
    max_queued: usize,
    /// The server-wide budget this outbox's bytes count against.
    budget: Arc<QueueBudget>,
    flusher: Arc<Flusher>,
    metrics: Arc<Metrics>,
    kind: AtomicU8,
    /// Why the connection is ending, as a `Disconnect`; 0 until someone decides. The first
    /// writer wins, so a client closed as a slow consumer is counted as that, not as the
    /// "client closed" its answering Close frame would otherwise suggest.
    close_reason: AtomicU8,
    /// Set when anything (a pong or any frame) arrives; the heartbeat clears it each round
    /// and terminates the client if it is still clear at the next one.
    pub alive: AtomicBool,
    /// Set when the client thread has finished; a pending close deadline then has nothing to do.
    pub finished: AtomicBool,
    /// The name came from a JWT: `name` requests are refused.
    pub name_locked: AtomicBool,
    /// Rooms this client is a member of. Changed only under the hub lock (by its own thread
    /// joining or leaving, or by the hub removing it).
    pub rooms: Mutex<Vec<String>>,
    /// Display name; written only by the client's own thread (or by the hub, under its
    /// lock, when a signed-in owner takes the name back from a guest), read by whoever
    /// broadcasts about this client (leave notices).
    name: Mutex<Arc<str>>,
    /// Who this is: the user id decided at the upgrade (a JWT `sub` or a guest identity),
    /// set once before the connection joins the hub; everything that decides who may read,
    /// receive or be limited keys on it, never on `name`.
    user: std::sync::OnceLock<Arc<str>>,
    /// The client's address as per-address limits count it (after `--trusted-proxy`; an
    /// IPv6 /64), set once at the upgrade: what an address ban closes.
    address: std::sync::OnceLock<std::net::IpAddr>,
}

/// What every outbox shares with the others: the per-connection cap, the server-wide
/// budget, the flusher that finishes blocked writes, and the counters.
pub struct Outboxes {
    pub max_queued: usize,
    pub budget: Arc<QueueBudget>,
    pub flusher: Arc<Flusher>,
    pub metrics: Arc<Metrics>,
}

impl Conn {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        socket: TcpStream,
        tls: Option<Box<Mutex<rustls::ServerConnection>>>,
        outboxes: &Outboxes,
    ) -> Self {
        let max_queued = outboxes.max_queued;
        let budget = Arc::clone(&outboxes.budget);
        let flusher = Arc::clone(&outboxes.flusher);
        let metrics = Arc::clone(&outboxes.metrics);
        Conn {
            id,
            peer,
            socket,
            tls,
            out: Mutex::new(Outbox {
                queue: VecDeque::new(),
                spare: VecDeque::new(),
                queued_bytes: 0,
                writer: Writer::Idle,
                close_queued: false,
                dead: false,
            }),
            drained: Condvar::new(),
            max_queued,
            budget,
            flusher,
            metrics,
            kind: AtomicU8::new(Kind::Handshaking as u8),
            close_reason: AtomicU8::new(0),
            alive: AtomicBool::new(true),
            finished: AtomicBool::new(false),
            name_locked: AtomicBool::new(false),
            rooms: Mutex::new(Vec::new()),
            // The id's low 32 bits count this process's clients (see `Hub::set_id_base`).
            name: Mutex::new(Arc::from(format!("guest-{}", id & 0xFFFF_FFFF))),
            user: std::sync::OnceLock::new(),
            address: std::sync::OnceLock::new(),
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// The TLS state, if this connection is encrypted.
    pub fn tls(&self) -> Option<&Mutex<rustls::ServerConnection>> {
        self.tls.as_deref()
    }

    /// rustls has records (handshake, alerts, encrypted frames) the kernel has not taken yet.
    fn tls_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.lock().wants_write())
    }

    /// Queues TLS's close_notify (after everything already queued) and sends it.
    pub fn send_close_notify(self: &Arc<Self>) {
        if let Some(tls) = &self.tls {
            tls.lock().send_close_notify();
            self.flush();
        }
    }

    /// Queues a frame without doing any I/O, so it is safe to call while holding the hub lock.
    pub fn push(&self, frame: Bytes) -> Push {
        self.push_control(frame, false)
    }

    /// Queues raw bytes: a frame, or what tungstenite wrote (handshake responses, pongs,
    /// Close replies). `is_close`: a Close frame, the only thing that may pass the cap.
    pub fn push_control(&self, bytes: Bytes, is_close: bool) -> Push {
        let mut out = self.out.lock();
        if out.close_queued || out.dead {
            return Push::Closed;
        }
        // Pongs count against the cap like everything else (a client flooding pings without
        // reading would otherwise grow this queue forever); only a Close may exceed it, so
        // that a full outbox can still be closed properly.
        if !is_close && (out.queued_bytes + bytes.len() > self.max_queued || self.budget.refuses(out.queued_bytes)) {
            return Push::Overflow;
        }
        out.close_queued |= is_close;
        out.queued_bytes += bytes.len();
        self.budget.add(bytes.len());
        out.queue.push_back(bytes);
        Push::Queued
    }

    /// Queues a Close frame with `code` unless one is already queued. Returns whether this
    /// call queued it (the caller then owns the close handshake's timeout).
    pub fn push_close(&self, code: CloseCode, reason: &str) -> bool {
        self.push_control(frames::close_frame(code, reason), true) == Push::Queued
    }

    /// Queues and sends. Returns `Push::Overflow` for the caller to act on.
    pub fn send(self: &Arc<Self>, frame: Bytes) -> Push {
        let result = self.push(frame);
        if result == Push::Queued {
            self.flush();
        }
        result
    }

    /// Sends whatever is queued unless another thread is already the writer (then that
    /// thread will send our frames too, since it loops until the queue is empty).
    pub fn flush(self: &Arc<Self>) {
        if self.write_queued(false) == Flushed::Blocked {
            self.flusher.park(Arc::clone(self) as Arc<dyn Parked>);
        }
    }

    /// The writer loop. Takes ownership of the socket's write side (or returns at once if
    /// someone else has it), then sends batches until the queue is empty, the kernel buffer
    /// is full (→ `Blocked`, ownership passes to the flusher) or the socket fails.
    fn write_queued(&self, from_flusher: bool) -> Flushed {
        let mut out = self.out.lock();
        let may_write = match out.writer {
            Writer::Idle => !from_flusher,
            Writer::Parked => from_flusher,
            Writer::Busy => false,
        };
        if !may_write || out.dead {
            return Flushed::NotOwner;
        }
        loop {
            if out.queue.is_empty() && !self.tls_pending() {
                out.writer = Writer::Idle;
                self.drained.notify_all();
                return Flushed::Empty;
            }
            out.writer = Writer::Busy;
            // Take the whole queue out of the lock: pushers keep appending to the (empty)
            // spare while we are in the syscall, and never wait for our I/O.
            let mut batch = std::mem::take(&mut out.spare);
            std::mem::swap(&mut batch, &mut out.queue);
            drop(out);

            let result = self.send_batch(&mut batch);

            out = self.out.lock();
            let sent = result.as_ref().map_or(0, |(n, _)| *n);
            out.queued_bytes -= sent;
            self.budget.sub(sent);
            match result {
                Ok((_, true)) => {
                    // A burst (a crowd arriving, a replay) can grow the deques to thousands of
                    // slots; a VecDeque never shrinks, so give big ones back once drained
                    // rather than keep the peak for the connection's lifetime.
                    if batch.capacity() > KEEP_QUEUE_SLOTS {
                        batch = VecDeque::new();
                    }
                    out.spare = batch;
                    if out.queue.is_empty() && out.queue.capacity() > KEEP_QUEUE_SLOTS {
                        out.queue = VecDeque::new();
                    }
                }
                Ok((_, false)) => {
                    // Kernel buffer full. Put the unsent rest back in front of anything queued
                    // meanwhile, and let the flusher wait for room.
                    batch.append(&mut out.queue);
                    out.queue = batch;
                    out.writer = Writer::Parked;
                    return Flushed::Blocked;
                }
                Err(_) => {
                    self.set_close_reason(Disconnect::Gone);
                    out.dead = true;
                    out.queue.clear();
                    self.budget.sub(out.queued_bytes);
                    out.queued_bytes = 0;
                    out.writer = Writer::Idle;
                    drop(out);
                    // Wake the client thread (blocked in read) so it cleans up.
                    let _ = self.socket.shutdown(Shutdown::Both);
                    self.drained.notify_all();
                    return Flushed::Dead;
                }
            }
        }
    }

    /// Whether a Close frame has already been queued (by anyone).
    pub fn close_queued(&self) -> bool {
        self.out.lock().close_queued
    }

    /// Drops every queued frame but the first (which may be half-sent: cutting it would
    /// corrupt the stream), so a client being closed for the server-wide budget gives its
    /// memory back at once rather than when its close deadline passes. Returns the bytes
    /// freed; 0 if a writer is mid-batch (the heartbeat tries again next time).
    pub fn shed(&self) -> usize {
        let mut out = self.out.lock();
        if out.writer == Writer::Busy || out.queue.len() < 2 {
            return 0;
        }
        let freed: usize = out.queue.drain(1..).map(|f| f.len()).sum();
        out.queued_bytes -= freed;
        self.budget.sub(freed);
        freed
    }

    /// Bytes waiting to be sent (for tests and metrics).
    pub fn queued_bytes(&self) -> usize {
        self.out.lock().queued_bytes
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let out = self.out.lock();
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("kind", &self.kind())
            .field("queued_frames", &out.queue.len())
            .field("queued_bytes", &out.queued_bytes)
            .field("writer", &out.writer)
            .field("close_queued", &out.close_queued)
            .field("dead", &out.dead)
            .finish()
    }
}

mod ending;
mod labels;
mod send;
#[cfg(test)]
mod tests;
