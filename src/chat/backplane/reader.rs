//! The backplane's reader thread (part of the backplane; see `mod.rs`): follows the log,
//! and for each batch stores, broadcasts in log order and acknowledges this instance's
//! senders; relays other instances' `typing`; once a second syncs presence and renews the
//! names held here.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Sender;
use redis::streams::StreamReadReply;

use crate::chat::commit::{Reply, after_commit, reply_err};
use crate::chat::hub::Hub;
use crate::conn::fanout::Fanout;
use crate::metrics::Metrics;
use crate::store::{Store, StoredMessage};

use super::{
    BACKOFF_MAX, BACKOFF_MIN, Backplane, LOG_KEY, PRESENCE_EVERY, PRESENCE_TTL_SECS, Payload, READ_BLOCK, READ_COUNT,
    Snapshot, TypingPayload,
};

/// What the reader works with: the chat's pieces it stores into and broadcasts through.
pub struct ReaderParts<'a> {
    pub hub: &'a Hub,
    pub store: &'a dyn Store,
    pub metrics: &'a Metrics,
    pub fanout: &'a Fanout,
    pub backplane: &'a Backplane,
    /// Applies another instance's moderation events (`x` entries; `chat/moderation/`).
    pub on_moderation: &'a dyn Fn(&str),
}

/// The reader thread's body (the sequencer starts it with `--redis`): follows the log until
/// the backplane is stopped.
pub fn run_reader(parts: ReaderParts<'_>, prune: Sender<(String, u64)>) {
    Reader::new(parts, prune).run();
}

struct Reader<'a> {
    hub: &'a Hub,
    store: &'a dyn Store,
    metrics: &'a Metrics,
    fanout: &'a Fanout,
    bp: &'a Backplane,
    on_moderation: &'a dyn Fn(&str),
    prune: Sender<(String, u64)>,
    /// The last log entry processed (`0`: from the start of what the log keeps).
    last_id: String,
    /// Highest seq stored and broadcast per room, by this reader (the only broadcaster of
    /// chat messages in cluster mode).
    known: HashMap<String, u64>,
    next_presence: Instant,
}

impl<'a> Reader<'a> {
    fn new(parts: ReaderParts<'a>, prune: Sender<(String, u64)>) -> Self {
        let ReaderParts { hub, store, metrics, fanout, backplane: bp, on_moderation } = parts;
        let known = match store.last_seqs() {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                log::error!("backplane: cannot read the history's last sequence numbers: {e}");
                HashMap::new()
            }
        };
        hub.seed_rooms(&known);
        let next_presence = Instant::now();
        Reader { hub, store, metrics, fanout, bp, on_moderation, prune, last_id: "0".into(), known, next_presence }
    }

    fn run(&mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut down_since: Option<Instant> = None;
        while !self.bp.stop.load(Ordering::Acquire) {
            let mut con = match self.bp.connect() {
                Ok(con) => con,
                Err(e) => {
                    if down_since.is_none() {
                        log::error!("backplane: cannot reach Redis: {e}; retrying with backoff");
                        down_since = Some(Instant::now());
                    }
                    self.bp.connected.store(false, Ordering::Release);
                    self.expire_pending();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            if let Some(since) = down_since.take() {
                log::warn!("backplane: connected to Redis again after {:.1?}; catching up", since.elapsed());
            } else {
                log::info!("backplane: connected to Redis as instance {}", self.bp.instance);
            }
            backoff = BACKOFF_MIN;
            self.bp.epoch.fetch_add(1, Ordering::AcqRel);
            self.bp.connected.store(true, Ordering::Release);
            if let Err(e) = self.follow(&mut con) {
                if !self.bp.stop.load(Ordering::Acquire) {
                    log::error!("backplane: lost Redis: {e}; reconnecting");
                    down_since = Some(Instant::now());
                }
                self.bp.connected.store(false, Ordering::Release);
            }
        }
        self.bp.connected.store(false, Ordering::Release);
    }

    /// Follows the log on one connection until an error (or stop).
    fn follow(&mut self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        while !self.bp.stop.load(Ordering::Acquire) {
            if Instant::now() >= self.next_presence {
                self.sync_presence(con)?;
                self.next_presence = Instant::now() + PRESENCE_EVERY;
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(LOG_KEY)
                .arg(&self.last_id)
                .query(con)?;
            let entries = reply.and_then(|r| r.keys.into_iter().next()).map(|k| k.ids).unwrap_or_default();
            if entries.len() < READ_COUNT {
                *self.bp.caught_up_at.lock() = Instant::now();
            }
            if !entries.is_empty() {
                self.apply(entries).map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
            }
            self.expire_pending();
        }
        Ok(())
    }

    /// Stores, broadcasts and acknowledges one batch of log entries, in log order.
    fn apply(&mut self, entries: Vec<redis::streams::StreamId>) -> Result<(), String> {
        let Some(last_id) = entries.last().map(|e| e.id.clone()) else {
            return Ok(());
        };
        let mut fresh: Vec<(StoredMessage, String)> = Vec::with_capacity(entries.len());
        let mut seen: Vec<(StoredMessage, String)> = Vec::new();
        let mut to_send: Vec<StoredMessage> = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(typing) = entry.get::<String>("t") {
                self.relay_typing(&typing);
                continue;
            }
            if let Some(events) = entry.get::<String>("x") {
                (self.on_moderation)(&events);
                continue;
            }
            let Some((msg, token)) = decode(&entry) else {
                log::warn!("backplane: skipping malformed log entry {}", entry.id);
                continue;
            };
            if self.bp.lose_text.as_deref() == Some(msg.text.as_str()) {
                continue;
            }
            let known = self.known.get(&msg.room).copied().unwrap_or(0);
            if msg.seq <= known {
                seen.push((msg, token)); // already stored and broadcast here
                continue;
            }
            if msg.seq > known + 1 {
                // Entries this instance never read (the log was trimmed or Redis lost it):
                // take what the store has (all of it with a shared Postgres).
                let missing = self.store.range(&msg.room, known, (msg.seq - known - 1) as usize);
                match missing {
                    Ok(found) => to_send.extend(found.into_iter().filter(|m| m.seq < msg.seq)),
                    Err(e) => log::warn!("backplane: cannot fill the gap before {}#{}: {e}", msg.room, msg.seq),
                }
                log::warn!("backplane: room {:?} jumped from seq {known} to {}", msg.room, msg.seq);
            }
            self.known.insert(msg.room.clone(), msg.seq);
            to_send.push(msg.clone());
            fresh.push((msg, token));
        }
        let new: Vec<StoredMessage> = fresh.iter().map(|(m, _)| m.clone()).collect();
        if !new.is_empty() {
            let started = Instant::now();
            if let Err(e) = self.store.append_replicated(&new) {
                // Nothing of this batch is stored: forget it and read it again.
                for m in &new {
                    let k = self.known.entry(m.room.clone()).or_insert(0);
                    *k = (*k).min(m.seq - 1);
                }
                self.metrics.store_failed();
                return Err(format!("storing {} message(s) failed: {e}", new.len()));
            }
            self.metrics.store_committed(started.elapsed(), new.len());
        }
        to_send.sort_by(|a, b| a.room.cmp(&b.room).then(a.seq.cmp(&b.seq)));
        to_send.dedup_by(|a, b| a.room == b.room && a.seq == b.seq);
        // This instance's own senders, whose messages came back through the log.
        let replies: Vec<(Reply, &StoredMessage)> = {
            let mut pending = self.bp.pending.lock();
            fresh.iter().chain(seen.iter()).filter_map(|(m, token)| Some((pending.remove(token)?.0, m))).collect()
        };
        after_commit(self.hub, self.fanout, &to_send, replies, &self.prune);
        self.last_id = last_id;
        Ok(())
    }

    /// Another instance's `typing`, to the members here (this instance's own are relayed
    /// locally when sent).
    fn relay_typing(&self, payload: &str) {
        let Ok(t) = serde_json::from_str::<TypingPayload>(payload) else { return };
        if t.instance != self.bp.instance && crate::chat::protocol::validate_room(&t.room).is_ok() {
            self.hub.relay_remote_typing(&t.room, t.id, &t.user, &t.name, t.expires_ms);
        }
    }

    /// Answers published messages that were never read back (Redis failed in between).
    fn expire_pending(&self) {
        let mut pending = self.bp.pending.lock();
        if pending.is_empty() {
            return;
        }
        let expired: Vec<String> = pending
            .iter()
            .filter(|(_, (_, at))| at.elapsed() > self.bp.confirm_timeout)
            .map(|(t, _)| t.clone())
            .collect();
        for token in expired {
            if let Some((reply, _)) = pending.remove(&token) {
                reply_err(
                    self.hub,
                    reply,
                    "message not confirmed: Redis failed after it was sent; it may or may not be delivered",
                );
            }
        }
    }

    /// Writes this instance's rooms and users; reads the other instances'; renews the
    /// names held here (renaming the holders of any lost to another user).
    fn sync_presence(&mut self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let mine = Snapshot { rooms: self.hub.local_presence(), users: self.hub.local_users() };
        let key = format!("threadchat:presence:{}", self.bp.instance);
        let json = serde_json::to_string(&mine).unwrap_or_default();
        redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("EX")
            .arg(PRESENCE_TTL_SECS)
            .ignore()
            .cmd("SADD")
            .arg("threadchat:instances")
            .arg(&self.bp.instance)
            .ignore()
            .query::<()>(con)?;
        let instances: Vec<String> = redis::cmd("SMEMBERS").arg("threadchat:instances").query(con)?;
        let others: Vec<&String> = instances.iter().filter(|i| **i != self.bp.instance).collect();
        let mut remote: HashMap<String, Vec<crate::chat::hub::RemoteMember>> = HashMap::new();
        let mut users: HashMap<String, String> = HashMap::new();
        if !others.is_empty() {
            let keys: Vec<String> = others.iter().map(|i| format!("threadchat:presence:{i}")).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(con)?;
            for (instance, value) in others.iter().zip(values) {
                let Some(value) = value else {
                    // Expired: that instance stopped (or crashed) more than a TTL ago.
                    redis::cmd("SREM").arg("threadchat:instances").arg(instance.as_str()).query::<()>(con)?;
                    continue;
                };
                let snapshot: Snapshot = serde_json::from_str(&value).unwrap_or_default();
                users.extend(snapshot.users);
                for (room, members) in snapshot.rooms {
                    let list = remote.entry(room).or_default();
                    for (id, user, name) in members {
                        // One entry per user, as presence counts people, not tabs.
                        if !list.iter().any(|(_, u, _)| *u == user) {
                            list.push((id, user, name));
                        }
                    }
                }
            }
        }
        self.hub.set_remote_presence(remote);
        self.hub.names.set_remote(users);
        for (key, other) in self.hub.names.renew() {
            self.hub.take_name_back(&other, &key, self.store);
        }
        Ok(())
    }
}

fn decode(entry: &redis::streams::StreamId) -> Option<(StoredMessage, String)> {
    let seq: u64 = entry.get("s")?;
    let payload: String = entry.get("m")?;
    let p: Payload = serde_json::from_str(&payload).ok()?;
    // A room, or a conversation between two users.
    if crate::chat::protocol::validate_room(&p.room).is_err() && crate::chat::protocol::dm_parties(&p.room).is_none() {
        return None;
    }
    Some((StoredMessage { room: p.room, seq, id: p.id, user: p.user, name: p.name, text: p.text, ts: p.ts }, p.token))
}
