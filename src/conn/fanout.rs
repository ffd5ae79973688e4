//! The fan-out pool: a few threads (one per core) that flush outboxes after a chat
//! broadcast, so the sequencer can commit the next batch while the last one is written.
//!
//! The frames are already queued, in order, under the hub lock when a job arrives here;
//! flushing only drains each outbox (non-blocking `sendmsg`, parked with the flusher when a
//! socket is full), so the order in which members are flushed does not matter. A room's
//! member list is cut into chunks so that all cores share one big room.

use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::conn::outbox::Conn;

/// Members flushed per job: large enough that the hand-off (~10 µs) is noise next to the
/// writes (~3–6 µs each), small enough to spread a big room over every core.
const CHUNK: usize = 128;

enum Job {
    Flush(Arc<Vec<Arc<Conn>>>, Range<usize>),
    Stop,
}

pub struct Fanout {
    tx: Sender<Job>,
    threads: usize,
}

impl Fanout {
    /// Starts one thread per available core (at least 1, at most 8).
    pub fn start() -> std::io::Result<(Fanout, Vec<JoinHandle<()>>)> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut handles = vec![];
        for i in 0..threads {
            let rx: Receiver<Job> = rx.clone();
            handles.push(crate::conn::threads::spawn_named(&format!("fanout-{i}"), 256 * 1024, move || {
                while let Ok(Job::Flush(members, range)) = rx.recv() {
                    for conn in &members[range] {
                        if conn.kind().is_chat() {
                            conn.flush();
                        }
                    }
                }
            })?);
        }
        Ok((Fanout { tx, threads }, handles))
    }

    /// Flushes every member of `members`, spread over the pool.
    pub fn flush(&self, members: Arc<Vec<Arc<Conn>>>) {
        let n = members.len();
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK).min(n);
            if self.tx.send(Job::Flush(Arc::clone(&members), start..end)).is_err() {
                // Pool stopped (shutdown): flush here rather than lose the wake-up.
                for conn in &members[start..end] {
                    conn.flush();
                }
            }
            start = end;
        }
    }

    pub fn stop(&self) {
        for _ in 0..self.threads {
            let _ = self.tx.send(Job::Stop);
        }
    }
}
