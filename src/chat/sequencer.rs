//! The sequencer thread: the one place chat messages are numbered, stored and broadcast.
//!
//! Client threads (and `POST /api/rooms/{room}/messages`) validate a message and submit it
//! over a bounded channel. The sequencer takes everything waiting (up to `MAX_BATCH`),
//! gives each message the next `seq` of its room, writes the whole batch in **one**
//! transaction (group commit: one fsync for many messages), and only after the commit
//! broadcasts them in order and acknowledges them to their senders. So:
//! - nothing is broadcast or acknowledged before it is durable;
//! - every room has one gap-free order that every member sees;
//! - a slow disk makes batches bigger, not the server slower per message.
//!
//! A pruner thread deletes what retention no longer covers, in small chunks on its own
//! connection, so pruning never sits on this path.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::chat::hub::close_code;
use crate::chat::protocol::ServerMsg;
use crate::conn::outbox::{Conn, Push};
use crate::server::Shared;
use crate::store::{Retention, StoredMessage};

/// Most messages in one transaction.
const MAX_BATCH: usize = 512;
/// Submissions waiting at most; past it, submitting threads wait (backpressure on exactly
/// the clients that are sending).
const QUEUE: usize = 8192;
/// Rows deleted per pruning statement, so the pruner holds the write lock only briefly.
const PRUNE_CHUNK: usize = 500;

/// Who to tell when a message is stored (or could not be).
pub enum Reply {
    /// A WebSocket client: `ack` (if it gave a `ref`) or an `error`.
    Ws { conn: Arc<Conn>, r#ref: Option<u64> },
    /// An HTTP request waiting for the result.
    Http(Sender<Result<StoredMessage, String>>),
}

pub struct Submit {
    pub room: String,
    pub id: u64,
    pub name: Arc<str>,
    pub text: String,
    pub reply: Reply,
}

enum Cmd {
    Submit(Submit),
    Stop,
}

/// The handle other threads submit through.
pub struct Sequencer {
    tx: Sender<Cmd>,
    rx: Receiver<Cmd>,
}

impl Default for Sequencer {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        Sequencer { tx, rx }
    }
}

impl Sequencer {
    /// Queues a message for storing and broadcasting. Blocks while the queue is full.
    pub fn submit(&self, s: Submit) -> Result<(), String> {
        self.tx.send(Cmd::Submit(s)).map_err(|_| "the message store has stopped".to_string())
    }

    /// Asks the thread to exit after what is already queued.
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

/// Starts the sequencer and the pruner.
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Vec<JoinHandle<()>>> {
    let (prune_tx, prune_rx) = crossbeam_channel::bounded(1024);
    let rx = shared.sequencer.rx.clone();
    let seq_shared = Arc::clone(&shared);
    let mut threads = vec![];
    if shared.backplane.is_some() {
        // Cluster mode: the sequencer publishes; the backplane reader stores and broadcasts.
        threads.push(crate::chat::backplane::spawn_reader(Arc::clone(&shared), prune_tx.clone())?);
        threads.push(
            std::thread::Builder::new()
                .name("sequencer".into())
                .stack_size(512 * 1024)
                .spawn(move || run_clustered(&seq_shared, &rx))?,
        );
    } else {
        threads.push(
            std::thread::Builder::new()
                .name("sequencer".into())
                .stack_size(512 * 1024)
                .spawn(move || run(&seq_shared, &rx, &prune_tx))?,
        );
    }
    threads.push(
        std::thread::Builder::new()
            .name("pruner".into())
            .stack_size(256 * 1024)
            .spawn(move || prune_loop(&shared, &prune_rx))?,
    );
    Ok(threads)
}

/// With `--redis`: takes batches as `run` does, but hands them to the backplane, which
/// numbers them cluster-wide; the backplane reader then stores, broadcasts and acknowledges.
fn run_clustered(shared: &Shared, rx: &Receiver<Cmd>) {
    let Some(bp) = shared.backplane.as_deref() else { return };
    let mut publisher = crate::chat::backplane::Publisher::default();
    loop {
        let mut batch = Vec::new();
        let Some(stop) = next_batch(rx, &mut batch) else { return };
        publisher.publish(shared, bp, batch);
        if stop {
            return;
        }
    }
}

/// Waits for a submission, then takes everything else already waiting (up to `MAX_BATCH`)
/// into `batch`. `None`: stop now; `Some(true)`: stop after this batch.
fn next_batch(rx: &Receiver<Cmd>, batch: &mut Vec<Submit>) -> Option<bool> {
    match rx.recv() {
        Ok(Cmd::Submit(s)) => batch.push(s),
        Ok(Cmd::Stop) | Err(_) => return None,
    }
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Cmd::Submit(s)) => batch.push(s),
            Ok(Cmd::Stop) => return Some(true),
            Err(_) => break,
        }
    }
    Some(false)
}

fn run(shared: &Shared, rx: &Receiver<Cmd>, prune: &Sender<(String, u64)>) {
    let store = &*shared.store;
    // Continue each room's numbering where the store left off.
    let mut last: HashMap<String, u64> = match store.last_seqs() {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            log::error!("cannot read the history's last sequence numbers: {e}; chat messages will be refused");
            return;
        }
    };
    shared.hub.seed_rooms(&last);
    let mut batch: Vec<Submit> = Vec::with_capacity(MAX_BATCH);
    let mut msgs: Vec<StoredMessage> = Vec::with_capacity(MAX_BATCH);
    loop {
        let Some(stop) = next_batch(rx, &mut batch) else { return };
        let ts = crate::clock::now_ms();
        for s in &batch {
            let seq = last.entry(s.room.clone()).or_insert(0);
            *seq += 1;
            msgs.push(StoredMessage {
                room: s.room.clone(),
                seq: *seq,
                id: s.id,
                name: s.name.to_string(),
                text: s.text.clone(),
                ts,
            });
        }
        let started = Instant::now();
        match store.append(&msgs) {
            Ok(()) => {
                shared.metrics.store_committed(started.elapsed(), msgs.len());
                for members in shared.hub.broadcast_batch(&msgs) {
                    shared.fanout.flush(members);
                }
                for (s, m) in batch.drain(..).zip(msgs.iter()) {
                    reply_ok(shared, s.reply, m);
                }
                for m in msgs.iter().rev() {
                    // Latest seq per room; a full channel only delays pruning.
                    if let Err(TrySendError::Disconnected(_)) = prune.try_send((m.room.clone(), m.seq)) {
                        break;
                    }
                }
            }
            Err(e) => {
                log::error!("could not store {} message(s): {e}", msgs.len());
                shared.metrics.store_failed();
                // Give the numbers back: nothing of this batch exists.
                for m in &msgs {
                    let seq = last.entry(m.room.clone()).or_insert(0);
                    *seq = (*seq).min(m.seq - 1);
                }
                for s in batch.drain(..) {
                    reply_err(shared, s.reply, "message not stored: the history store failed; try again");
                }
            }
        }
        msgs.clear();
        if stop {
            return;
        }
    }
}

pub(crate) fn reply_ok(shared: &Shared, reply: Reply, m: &StoredMessage) {
    match reply {
        Reply::Ws { conn, r#ref: Some(r#ref) } => {
            let ack = ServerMsg::Ack { room: &m.room, r#ref, seq: m.seq }.to_frame();
            if conn.send(ack) == Push::Overflow {
                shared.hub.close_client(&conn, close_code::POLICY, "slow consumer: too much unread data");
            }
        }
        Reply::Ws { .. } => {}
        Reply::Http(tx) => {
            let _ = tx.send(Ok(m.clone()));
        }
    }
}

pub(crate) fn reply_err(shared: &Shared, reply: Reply, error: &str) {
    match reply {
        Reply::Ws { conn, r#ref } => {
            let frame = ServerMsg::Error { error, r#ref }.to_frame();
            if conn.send(frame) == Push::Overflow {
                shared.hub.close_client(&conn, close_code::POLICY, "slow consumer: too much unread data");
            }
        }
        Reply::Http(tx) => {
            let _ = tx.send(Err(error.to_string()));
        }
    }
}

/// Deletes what retention no longer covers: rooms that got messages, about once a second;
/// every known room once a minute when there is an age limit.
fn prune_loop(shared: &Shared, rx: &Receiver<(String, u64)>) {
    let retention = crate::store::Retention::of(&shared.config);
    let mut dirty: HashMap<String, u64> = HashMap::new();
    let mut known: HashMap<String, u64> = HashMap::new();
    let mut last_age_pass = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((room, seq)) => {
                let e = dirty.entry(room).or_insert(0);
                *e = (*e).max(seq);
                continue_collecting(rx, &mut dirty);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
        if let Err(e) = shared.store.maintain() {
            log::warn!("history store upkeep failed: {e}");
        }
        let age_pass = retention.max_age_ms.is_some() && last_age_pass.elapsed() >= Duration::from_secs(60);
        if age_pass {
            last_age_pass = Instant::now();
            for (room, seq) in &known {
                dirty.entry(room.clone()).or_insert(*seq);
            }
        }
        for (room, seq) in dirty.drain() {
            prune_room(shared, &room, seq, retention);
            known.insert(room, seq);
        }
    }
}

fn continue_collecting(rx: &Receiver<(String, u64)>, dirty: &mut HashMap<String, u64>) {
    while let Ok((room, seq)) = rx.try_recv() {
        let e = dirty.entry(room).or_insert(0);
        *e = (*e).max(seq);
    }
}

fn prune_room(shared: &Shared, room: &str, last_seq: u64, retention: Retention) {
    if last_seq <= retention.max_messages && retention.max_age_ms.is_none() {
        return;
    }
    loop {
        match shared.store.prune(room, last_seq, retention, PRUNE_CHUNK) {
            Ok(n) if n == PRUNE_CHUNK => continue,
            Ok(_) => return,
            Err(e) => {
                log::warn!("pruning room {room:?} failed: {e}");
                return;
            }
        }
    }
}
