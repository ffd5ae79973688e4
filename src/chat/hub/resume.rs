//! Resuming a room: replaying what a client missed from the store, then making it a live
//! member, with nothing lost or duplicated in between (part of the hub; see `mod.rs`).

use std::sync::Arc;
use std::time::Instant;

use crate::chat::protocol::ServerMsg;
use crate::conn::{Conn, Push};
use crate::store::History;

use super::{CLOSE_TIMEOUT, Hub, REPLAY_PAGE};

impl Hub {
    /// Replays `room` from `seq > after` to `conn`, then makes it a live member, with
    /// nothing lost or duplicated in between:
    /// 1. leave the room's live list (if in it), so no live frame can jump the queue;
    /// 2. report a `gap` if retention already dropped some of what was asked for;
    /// 3. send what the store has, page by page, without holding any lock;
    /// 4. under the hub lock, send what was broadcast meanwhile (from the recent-frames
    ///    cache, or go back to 3 if it does not reach back far enough) and join the live
    ///    list — both before any later broadcast, which needs the same lock.
    pub fn resume(&self, conn: &Arc<Conn>, room: &str, after: u64, store: &dyn History) -> Result<(), String> {
        if self.resume_from_cache(conn, room, after)? {
            return Ok(());
        }
        // The store can be ahead of the broadcasts: the sequencer commits a batch, then
        // broadcasts it message by message. Replay from the store only up to what has been
        // broadcast (`frontier`); anything later reaches us live once we are a member.
        let mut frontier = {
            let mut st = self.state.lock();
            self.detach(&mut st, conn, room, false);
            self.check_room_count(conn)?;
            let r = self.room(&mut st, room, false)?;
            // Keeps the recent-frames cache alive until we are a member.
            r.resuming += 1;
            r.last_seq
        };
        let _resuming = Resuming { hub: self, room };
        let oldest = store.oldest_seq(room).map_err(|e| format!("history unavailable: {e}"))?;
        let mut cursor = after;
        if let Some(oldest) = oldest
            && oldest > after + 1
            && after < frontier
        {
            conn.push(ServerMsg::Gap { room, from: after + 1, to: oldest - 1 }.to_frame());
            cursor = oldest - 1;
        }
        loop {
            cursor = self.replay_from_store(conn, room, cursor, frontier, store)?;
            let mut st = self.state.lock();
            let last = st.rooms.get(room).map_or(0, |r| r.last_seq);
            if last > cursor {
                let r = &st.rooms[room];
                if r.recent.front().is_none_or(|(s, _)| *s > cursor + 1) {
                    // Broadcast too much meanwhile for the cache: read the store again.
                    drop(st);
                    frontier = last;
                    continue;
                }
                for (_, frame) in r.recent.iter().filter(|(s, _)| *s > cursor) {
                    if conn.push(frame.clone()) == Push::Overflow {
                        return Err("too much history to replay at once".into());
                    }
                }
            }
            self.attach(&mut st, conn, room);
            drop(st);
            conn.flush();
            return Ok(());
        }
    }

    /// The short way, when everything after `after` is still in the room's recent-frames
    /// cache (a client back after a short absence, as after a proxy's restart): the frames
    /// everyone else got are queued as they are, and it is a member again, all under one
    /// lock — no store query, no frame built per client. Returns false (nothing done) when
    /// the cache does not hold exactly `after + 1 ..= last_seq` (a deleted message leaves a
    /// hole in it; the store has its tombstone).
    fn resume_from_cache(&self, conn: &Arc<Conn>, room: &str, after: u64) -> Result<bool, String> {
        let mut st = self.state.lock();
        let Some(r) = st.rooms.get(room) else { return Ok(false) };
        let missed = match r.last_seq.checked_sub(after) {
            Some(n) if !r.is_member(conn.id) => n as usize,
            _ => return Ok(false),
        };
        // Seqs in the cache only grow: `missed` entries from after + 1 to last_seq are all of them.
        let first = r.recent.len().checked_sub(missed).and_then(|i| r.recent.get(i));
        let covered = missed == 0
            || matches!(first, Some((s, _)) if *s == after + 1)
                && r.recent.back().is_some_and(|(s, _)| *s == r.last_seq);
        if !covered {
            return Ok(false);
        }
        self.check_room_count(conn)?;
        for (_, frame) in r.recent.iter().skip(r.recent.len() - missed) {
            if conn.push(frame.clone()) == Push::Overflow {
                return Err("too much history to replay at once".into());
            }
        }
        self.attach(&mut st, conn, room);
        drop(st);
        conn.flush();
        Ok(true)
    }

    /// Sends the store's messages of `room` after `cursor`; returns the last seq sent.
    /// Sends the store's messages of `room` with `cursor < seq <= upto`; returns the last
    /// seq sent (or `cursor`).
    fn replay_from_store(
        &self,
        conn: &Arc<Conn>,
        room: &str,
        mut cursor: u64,
        upto: u64,
        store: &dyn History,
    ) -> Result<u64, String> {
        while cursor < upto {
            let want = REPLAY_PAGE.min((upto - cursor) as usize);
            let page = store.range(room, cursor, want).map_err(|e| format!("history unavailable: {e}"))?;
            for m in &page {
                match conn.push(self.message_frame(m)) {
                    Push::Queued => cursor = m.seq,
                    Push::Overflow => {
                        // The outbox is full of replay: let it drain (the client is reading),
                        // then continue; give up if it does not.
                        conn.flush();
                        if !conn.wait_drained(Instant::now() + CLOSE_TIMEOUT)
                            || conn.push(self.message_frame(m)) != Push::Queued
                        {
                            return Err("too much history to replay at once".into());
                        }
                        cursor = m.seq;
                    }
                    Push::Closed => return Err("connection closing".into()),
                }
            }
            conn.flush();
            if page.len() < want {
                break; // the rest was pruned meanwhile, or never existed
            }
        }
        Ok(cursor)
    }
}

/// A resume in progress; dropping it (joined, or failed) lets the room drop its cache if
/// nobody is left to need it.
struct Resuming<'a> {
    hub: &'a Hub,
    room: &'a str,
}

impl Drop for Resuming<'_> {
    fn drop(&mut self) {
        let mut st = self.hub.state.lock();
        if let Some(r) = st.rooms.get_mut(self.room) {
            r.resuming -= 1;
            r.release_cache_if_unused();
        }
        self.hub.forget_if_empty(&mut st, self.room);
    }
}

impl Hub {
    /// Replays the conversation `key` after `after`, page by page as a room's resume does
    /// (waiting for the client to read a full outbox, not failing), however long it is.
    /// Conversations have no members to join: a `dm` sent meanwhile reaches the client live
    /// too, possibly inside the replay, so a client keeps each `seq` once.
    pub fn resume_dm(&self, conn: &Arc<Conn>, key: &str, after: u64, store: &dyn History) -> Result<(), String> {
        self.replay_from_store(conn, key, after, u64::MAX, store)?;
        Ok(())
    }
}
