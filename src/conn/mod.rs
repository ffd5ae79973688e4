//! Plumbing for one connection's bytes: the outbox every byte to a socket passes through,
//! the flusher that finishes blocked writes, the fan-out pool that flushes after a
//! broadcast, and the recycled connection threads. Uses neither `net` nor `chat`.

pub mod fanout;
pub mod flusher;
pub mod frames;
pub mod outbox;
pub mod threads;
pub mod unsent;

/// A connection, as every layer above uses it: [`Conn`] (an id, the peer, the socket, its
/// kind, who it is, its rooms) is defined in `outbox.rs`, beside the queue every byte to its
/// socket passes through, because the one rule a `Conn` keeps — a single writer per socket —
/// is the outbox's. Import it from here.
pub use outbox::{Conn, Kind, Outboxes, Push};
