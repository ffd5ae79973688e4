//! Plumbing for one connection's bytes: the outbox every byte to a socket passes through,
//! the flusher that finishes blocked writes, the fan-out pool that flushes after a
//! broadcast, and the recycled connection threads. Uses neither `net` nor `chat`.

pub mod fanout;
pub mod flusher;
pub mod frames;
pub mod outbox;
pub mod threads;
pub mod unsent;
