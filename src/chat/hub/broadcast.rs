//! Broadcasting committed messages: to a room's members (JSON, or bare text for plain
//! clients), or, for a direct message, to every connection of its two users (part of the
//! hub; see `mod.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::chat::protocol::ServerMsg;
use crate::conn::{Conn, Kind};
use crate::store::StoredMessage;

use super::Hub;

impl Hub {
    /// Broadcasts a stored chat message to its room (called by the sequencer, in seq order).
    /// Queues a committed batch for every member of its rooms (called by the sequencer, in
    /// seq order), all under one lock. Returns the member lists to flush — the caller hands
    /// them to the fan-out pool, so each member is flushed once per batch and gets the whole
    /// batch in one `sendmsg`.
    pub fn broadcast_batch(&self, batch: &[StoredMessage]) -> Vec<Arc<Vec<Arc<Conn>>>> {
        self.metrics.messages_in.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let frames: Vec<Bytes> = batch.iter().map(|m| self.message_frame(m)).collect();
        let mut overflowed = vec![];
        let mut to_flush: Vec<Arc<Vec<Arc<Conn>>>> = vec![];
        {
            let mut st = self.state.lock();
            for (m, frame) in batch.iter().zip(frames) {
                if crate::chat::protocol::is_conversation(&m.room) {
                    // Every JSON connection of its two users, from the index by user id (a
                    // conversation keyed by names, from before user ids, is nobody's).
                    let mut to: Vec<Arc<Conn>> = vec![];
                    if let Some((a, b)) = crate::chat::protocol::dm_parties(&m.room) {
                        let users = if a == b { &[a][..] } else { &[a, b][..] };
                        for user in users {
                            let conns = st.users.get(*user).into_iter().flatten();
                            to.extend(conns.filter(|c| c.kind() == Kind::Chat).cloned());
                        }
                    }
                    overflowed.extend(self.push_to(&to, &frame, None));
                    to_flush.push(Arc::new(to));
                    continue;
                }
                // Stored already: it is broadcast whatever the room budget says.
                let Ok(room) = self.room(&mut st, &m.room, true) else { continue };
                // Its sender's `join` (if still waiting for the tick) goes first.
                self.send_notices(&mut room.pending, &room.members, &m.room, &mut overflowed);
                room.last_seq = m.seq;
                room.stats.last_seq.store(m.seq, Ordering::Relaxed);
                room.remember(m.seq, &frame);
                overflowed.extend(self.push_message_to(&room.members, &frame, &m.text));
                if !to_flush.iter().any(|f| Arc::ptr_eq(f, &room.members)) {
                    to_flush.push(room.members.clone());
                }
            }
        }
        self.close_overflowed(overflowed);
        to_flush
    }

    /// Queues a chat message for `clients`: `frame` (JSON) to chat clients, the bare `text`
    /// to plain-text ones (framed once, and only if one is there). Memory only: called under
    /// the lock; returns those over their cap.
    fn push_message_to(&self, clients: &[Arc<Conn>], frame: &Bytes, text: &str) -> Vec<Arc<Conn>> {
        let mut plain: Option<Bytes> = None;
        self.push_each(clients, |conn| match conn.kind() {
            Kind::Chat => Some(frame.clone()),
            Kind::Plain => Some(plain.get_or_insert_with(|| crate::conn::frames::text_frame(text.as_bytes())).clone()),
            _ => None,
        })
    }
}

impl Hub {
    /// The frame every member of a room receives for a stored message (a `dm`, naming the
    /// recipient by id and by the name it shows now, for a conversation's).
    pub(super) fn message_frame(&self, m: &StoredMessage) -> Bytes {
        if let Some((a, b)) = crate::chat::protocol::dm_parties(&m.room) {
            let to_user = if m.user == a { b } else { a };
            let to = self.name_of(to_user);
            return ServerMsg::Dm {
                room: &m.room,
                seq: m.seq,
                id: m.id,
                user: &m.user,
                name: &m.name,
                to_user,
                to: to.as_deref(),
                text: &m.text,
                ts: m.ts,
                deleted: m.is_deleted(),
            }
            .to_frame();
        }
        ServerMsg::Message {
            room: &m.room,
            seq: m.seq,
            id: m.id,
            user: &m.user,
            name: &m.name,
            text: &m.text,
            ts: m.ts,
            deleted: m.is_deleted(),
        }
        .to_frame()
    }
}
