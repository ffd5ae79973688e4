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

use crossbeam_channel::{Receiver, Sender};

use crate::chat::Chat;
use crate::chat::commit::{Submit, after_commit, reply_err};

pub mod queue;
use crate::store::{Retention, StoredMessage};
use queue::{Cmd, MAX_BATCH, next_batch};

/// Rows deleted per pruning statement, so the pruner holds the write lock only briefly.
const PRUNE_CHUNK: usize = 500;
/// How often the pruner runs (when rooms got messages).
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Starts the sequencer and the pruner.
pub fn spawn(chat: Arc<Chat>) -> std::io::Result<Vec<JoinHandle<()>>> {
    let (prune_tx, prune_rx) = crossbeam_channel::bounded(1024);
    let rx = chat.sequencer.rx.clone();
    let seq_chat = Arc::clone(&chat);
    let mut threads = vec![];
    if chat.backplane.is_some() {
        // Only a build with the `redis` feature can have a backplane.
        #[cfg(feature = "redis")]
        threads.extend(spawn_clustered(&chat, &prune_tx)?);
    } else {
        threads
            .push(crate::conn::threads::spawn_named("sequencer", 512 * 1024, move || run(&seq_chat, &rx, &prune_tx))?);
    }
    threads.push(crate::conn::threads::spawn_named("pruner", 256 * 1024, move || prune_loop(&chat, &prune_rx))?);
    Ok(threads)
}

/// Cluster mode: the sequencer publishes; the backplane reader stores and broadcasts.
#[cfg(feature = "redis")]
fn spawn_clustered(chat: &Arc<Chat>, prune_tx: &Sender<(String, u64)>) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut threads = vec![];
    let (seq_chat, rx) = (Arc::clone(chat), chat.sequencer.rx.clone());
    {
        let (reader_chat, prune) = (Arc::clone(chat), prune_tx.clone());
        threads.push(crate::conn::threads::spawn_named("backplane", 512 * 1024, move || {
            let chat = &*reader_chat;
            if let Some(backplane) = chat.backplane.as_deref() {
                let on_moderation = |events: &str| {
                    crate::chat::moderation::actions::apply_remote(chat, backplane.instance_name(), events)
                };
                let parts = crate::chat::backplane::ReaderParts {
                    hub: &chat.hub,
                    store: &*chat.store,
                    metrics: &chat.metrics,
                    fanout: &chat.fanout,
                    backplane,
                    on_moderation: &on_moderation,
                };
                crate::chat::backplane::run_reader(parts, prune);
            }
        })?);
        threads
            .push(crate::conn::threads::spawn_named("sequencer", 512 * 1024, move || run_clustered(&seq_chat, &rx))?);
    }
    Ok(threads)
}

#[cfg(feature = "redis")]
/// With `--redis`: takes batches as `run` does, but hands them to the backplane, which
/// numbers them cluster-wide; the backplane reader then stores, broadcasts and acknowledges.
fn run_clustered(chat: &Chat, rx: &Receiver<Cmd>) {
    let Some(bp) = chat.backplane.as_deref() else { return };
    let mut publisher = crate::chat::backplane::Publisher::default();
    loop {
        let mut batch = Vec::new();
        let Some(stop) = next_batch(rx, &mut batch) else { return };
        publisher.publish(&chat.hub, bp, batch);
        if stop {
            return;
        }
    }
}

fn run(chat: &Chat, rx: &Receiver<Cmd>, prune: &Sender<(String, u64)>) {
    let store = &*chat.store;
    // Continue each room's numbering where the store left off.
    let mut last: HashMap<String, u64> = match store.last_seqs() {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            log::error!("cannot read the history's last sequence numbers: {e}; chat messages will be refused");
            return;
        }
    };
    chat.hub.seed_rooms(&last);
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
                user: s.user.to_string(),
                name: s.name.to_string(),
                text: s.text.clone(),
                ts,
            });
        }
        let started = Instant::now();
        let result = match chat.config.hooks.fails_commit(msgs.iter().map(|m| m.text.as_str())) {
            true => Err(crate::store::StoreError("injected failure (test hook)".into())),
            false => store.append(&msgs),
        };
        match result {
            Ok(()) => {
                chat.metrics.store_committed(started.elapsed(), msgs.len());
                let replies = batch.drain(..).map(|s| s.reply).zip(msgs.iter());
                after_commit(&chat.hub, &chat.fanout, &msgs, replies, prune);
            }
            Err(e) => {
                log::error!("could not store {} message(s): {e}", msgs.len());
                chat.metrics.store_failed();
                // Give the numbers back: nothing of this batch exists.
                for m in &msgs {
                    let seq = last.entry(m.room.clone()).or_insert(0);
                    *seq = (*seq).min(m.seq - 1);
                }
                for s in batch.drain(..) {
                    reply_err(&chat.hub, s.reply, "message not stored: the history store failed; try again");
                }
            }
        }
        msgs.clear();
        if stop {
            return;
        }
    }
}

/// Deletes what retention no longer covers: rooms that got messages, about once a second;
/// every known room once a minute when there is an age limit.
fn prune_loop(chat: &Chat, rx: &Receiver<(String, u64)>) {
    let retention = crate::store::Retention::of(&chat.config);
    let mut dirty: HashMap<String, u64> = HashMap::new();
    let mut known: HashMap<String, u64> = HashMap::new();
    let mut last_age_pass = Instant::now();
    let mut last_pass = Instant::now();
    loop {
        // At most one pass a second, however busy the rooms: under a steady stream of
        // commits, a pass per commit (a checkpoint and a DELETE each) once took more CPU
        // than everything else the server did.
        let next_pass = last_pass + PRUNE_EVERY;
        loop {
            match rx.recv_deadline(next_pass) {
                Ok((room, seq)) => {
                    let e = dirty.entry(room).or_insert(0);
                    *e = (*e).max(seq);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
        last_pass = Instant::now();
        if let Err(e) = chat.store.maintain() {
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
            prune_room(chat, &room, seq, retention);
            known.insert(room, seq);
        }
    }
}

fn prune_room(chat: &Chat, room: &str, last_seq: u64, retention: Retention) {
    if last_seq <= retention.max_messages && retention.max_age_ms.is_none() {
        return;
    }
    loop {
        let started = Instant::now();
        match chat.store.prune(room, last_seq, retention, PRUNE_CHUNK) {
            Ok(n) if n == PRUNE_CHUNK => {
                // Rest as long as the chunk took: a pass spread over its second instead of
                // a burst of them, so the message path never finds a core taken for long.
                std::thread::sleep(started.elapsed().min(Duration::from_millis(20)));
                continue;
            }
            Ok(_) => return,
            Err(e) => {
                log::warn!("pruning room {room:?} failed: {e}");
                return;
            }
        }
    }
}
