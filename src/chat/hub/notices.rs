//! Join and leave notices, coalesced per room per tick (part of the hub; see `mod.rs`).
//!
//! Sent one by one, every arrival and departure costs a delivery to every other member: a
//! room of 64 where people come and go costs ~126 deliveries per connection, more than the
//! handshake itself. So a room queues its notices, and they go out together at the next
//! tick ([`NOTICE_TICK`], rung by the heartbeat thread) — or earlier, the moment anything
//! else is sent to the room, so a message never arrives before its sender's `join`.
//!
//! What a member sees stays exact at every tick: its `presence` (a snapshot when it
//! entered) plus the notices of what changed *after* that snapshot, netted per user — a
//! user who joined and left within the same tick is not announced at all (to that member
//! nothing changed), and one who left and came back neither. Each member's view therefore
//! equals the room's membership after every tick. All of it runs under the hub lock, with
//! the rest of the room's state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::chat::protocol::ServerMsg;
use crate::conn::{Conn, Kind, Push};

use super::{Deadline, Hub, HubState, PendingClose};

/// How long a join or leave may wait for the notices queued beside it. Short enough that
/// people see arrivals "at once"; long enough that a crowd connecting (or a reconnect
/// storm) costs each member one write per tick, not one per arrival.
pub const NOTICE_TICK: Duration = Duration::from_millis(50);

/// One `join` (or `leave`) of a user, as it will be framed.
struct Notice {
    join: bool,
    /// The connection that arrived (or left last).
    id: u64,
    user: Arc<str>,
    name: Arc<str>,
    /// The user's number in [`Pending::slots`].
    slot: u32,
}

/// A room's notices not sent yet.
#[derive(Default)]
pub(super) struct Pending {
    /// In the order they happened.
    notices: Vec<Notice>,
    /// A small number per user seen this tick, so netting counts in an array instead of
    /// hashing user ids once per member (a busy room nets thousands of notices per tick,
    /// for each member that entered during it).
    slots: HashMap<Arc<str>, u32>,
    /// Members who entered while notices were pending, by connection id: how many notices
    /// were queued when it entered. Its presence already showed the room as of then, so it
    /// gets only the later ones.
    entered: HashMap<u64, usize>,
}

impl Pending {
    /// Which of the notices after the first `from` a member gets: netted per user. A user's
    /// notices alternate (join, leave, join…), so an even number of them since `from`
    /// leaves the user as they were, and an odd number ends on what they are now.
    fn netted(&self, from: usize) -> Vec<usize> {
        // Per slot: how many notices since `from`, and the index of the last.
        let mut last = vec![(0u32, 0usize); self.slots.len()];
        for (i, notice) in self.notices.iter().enumerate().skip(from) {
            let e = &mut last[notice.slot as usize];
            *e = (e.0 + 1, i);
        }
        let mut picked: Vec<usize> = last.into_iter().filter(|(n, _)| n % 2 == 1).map(|(_, i)| i).collect();
        picked.sort_unstable();
        picked
    }

    fn push(&mut self, join: bool, id: u64, user: Arc<str>, name: Arc<str>) {
        let next = self.slots.len() as u32;
        let slot = *self.slots.entry(Arc::clone(&user)).or_insert(next);
        self.notices.push(Notice { join, id, user, name, slot });
    }
}

impl Hub {
    /// Queues a `join` (or a `leave`) of `conn`'s user for the other members of `room_name`.
    /// Under the lock.
    pub(super) fn queue_notice(&self, st: &mut HubState, room_name: &str, join: bool, conn: &Conn) {
        // Every room with notices is in `noticing` until the tick takes them all: an empty
        // list means no tick is due yet.
        let ask_for_tick = st.noticing.is_empty();
        let Some(room) = st.rooms.get_mut(room_name) else { return };
        if room.pending.is_none() {
            st.noticing.push(room_name.to_string());
        }
        room.pending.get_or_insert_with(Default::default).push(join, conn.id, conn.user(), conn.name());
        if ask_for_tick {
            let _ = self.closing.send(PendingClose {
                conn: std::sync::Weak::new(),
                deadline: Instant::now() + NOTICE_TICK,
                why: Deadline::Notices,
            });
        }
    }

    /// Records that `conn` entered `room_name` now, so notices queued before it are not
    /// sent to it. Under the lock.
    pub(super) fn entered_after_notices(st: &mut HubState, room_name: &str, conn: &Conn) {
        if let Some(pending) = st.rooms.get_mut(room_name).and_then(|r| r.pending.as_mut()) {
            pending.entered.insert(conn.id, pending.notices.len());
        }
    }

    /// Sends a room's pending notices to its `members` now (before anything else is sent
    /// there). Under the lock: memory only; returns whether anything was queued (the
    /// members then need a flush), adding the members over their cap to `overflowed`.
    pub(super) fn send_notices(
        &self,
        pending: &mut Option<Box<Pending>>,
        members: &[Arc<Conn>],
        room_name: &str,
        overflowed: &mut Vec<Arc<Conn>>,
    ) -> bool {
        let Some(pending) = pending.take() else { return false };
        // Each notice is framed once, when first needed. Most members share one view (they
        // were there before every notice); the few who entered since see fewer.
        let mut frames: Vec<Option<Bytes>> = vec![None; pending.notices.len()];
        let mut views: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut delivered = 0;
        for conn in members.iter().filter(|c| c.kind() == Kind::Chat) {
            let from = pending.entered.get(&conn.id).copied().unwrap_or(0);
            let view = views.entry(from).or_insert_with(|| pending.netted(from));
            for &i in view.iter() {
                let frame = frames[i].get_or_insert_with(|| {
                    let Notice { join, id, user, name, .. } = &pending.notices[i];
                    let (room, id) = (room_name, *id);
                    if *join {
                        ServerMsg::Join { room, id, user, name }.to_frame()
                    } else {
                        ServerMsg::Leave { room, id, user, name }.to_frame()
                    }
                });
                match conn.push(frame.clone()) {
                    Push::Queued => delivered += 1,
                    Push::Overflow => {
                        overflowed.push(Arc::clone(conn));
                        break;
                    }
                    Push::Closed => break,
                }
            }
        }
        self.metrics.deliveries.fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
        delivered > 0
    }

    /// The tick: every room's pending notices go out, one write per member. Called by the
    /// heartbeat thread at the deadline [`queue_notice`](Self::queue_notice) asked for.
    pub fn send_all_notices(&self) {
        let mut overflowed = vec![];
        let mut to_flush = vec![];
        {
            let mut st = self.state.lock();
            for room_name in std::mem::take(&mut st.noticing) {
                if let Some(room) = st.rooms.get_mut(&room_name)
                    && self.send_notices(&mut room.pending, &room.members, &room_name, &mut overflowed)
                {
                    to_flush.push(room.members.clone());
                }
            }
        }
        for members in &to_flush {
            super::flush_all(members, None);
        }
        self.close_overflowed(overflowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(events: &[(bool, &str)]) -> Pending {
        let mut p = Pending::default();
        for (join, u) in events {
            p.push(*join, 1, Arc::from(*u), Arc::from(*u));
        }
        p
    }

    #[test]
    fn notices_net_per_user_and_keep_their_order() {
        // x came and went (nothing), y left (leave), z left and came back (nothing),
        // w arrived (join): the survivors in the order of their last notice.
        let p = pending(&[(true, "x"), (false, "y"), (false, "z"), (false, "x"), (true, "z"), (true, "w")]);
        assert_eq!(p.netted(0), vec![1, 5]);
        // A member who entered after x's join (its presence listed x) sees x leave.
        assert_eq!(p.netted(1), vec![1, 3, 5]);
        assert_eq!(p.netted(3), vec![3, 4, 5]);
        assert_eq!(p.netted(6), Vec::<usize>::new());
        assert_eq!(p.netted(60), Vec::<usize>::new());
    }
}
