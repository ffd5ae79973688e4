//! Rooms: creating them within the budgets, joining and leaving, and what each tells the
//! others (`presence`, `join`, `leave`) — part of the hub; see `mod.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::chat::protocol::{Member, ServerMsg};
use crate::chat::room_index::RoomStats;
use crate::conn::{Conn, Kind};

use super::{Hub, HubState, PRESENCE_LIST_MAX, RECENT_BYTES, RECENT_FRAMES};

#[derive(Default)]
pub(super) struct Room {
    /// What `/api/rooms` and `/metrics` see (see `room_index.rs`).
    pub(super) stats: Arc<RoomStats>,
    /// Resumes of this room in progress: while any is, the recent-frames cache is kept even
    /// without members.
    pub(super) resuming: usize,
    /// Bytes in `recent`.
    pub(super) recent_bytes: usize,
    /// Members, copy-on-write: a broadcaster clones the `Arc` to flush after unlocking.
    pub(super) members: Arc<Vec<Arc<Conn>>>,
    /// Members per user id: presence shows a user once, and `join`/`leave` are sent only
    /// for a user's first arrival and last departure (two tabs are one person).
    pub(super) users: HashMap<Arc<str>, usize>,
    /// `seq` of the last message broadcast here since start (0: none yet).
    pub(super) last_seq: u64,
    /// The last `RECENT_FRAMES` message frames, by seq.
    pub(super) recent: VecDeque<(u64, Bytes)>,
    /// `join`/`leave` notices waiting for the tick (see `notices.rs`).
    pub(super) pending: Option<Box<super::notices::Pending>>,
}

impl Room {
    pub(super) fn is_member(&self, id: u64) -> bool {
        self.members.iter().any(|c| c.id == id)
    }

    /// Caches a broadcast frame for resumes, if anyone could need it.
    pub(super) fn remember(&mut self, seq: u64, frame: &Bytes) {
        if self.members.is_empty() && self.resuming == 0 {
            return;
        }
        self.recent.push_back((seq, frame.clone()));
        self.recent_bytes += frame.len();
        while self.recent.len() > RECENT_FRAMES || self.recent_bytes > RECENT_BYTES {
            let Some((_, old)) = self.recent.pop_front() else { break };
            self.recent_bytes -= old.len();
        }
    }

    /// Memory follows members: a room nobody is in (or resuming) gives its cache back.
    pub(super) fn release_cache_if_unused(&mut self) {
        if self.members.is_empty() && self.resuming == 0 {
            self.recent = VecDeque::new();
            self.recent_bytes = 0;
        }
    }

    pub(super) fn publish_users(&self) {
        self.stats.users.store(self.users.len(), Ordering::Relaxed);
    }
}

impl Hub {
    /// `room`, created if it does not exist yet and the server is below `--max-rooms`
    /// (`force`: regardless — for messages already stored, and rooms the store or the
    /// cluster already has).
    pub(super) fn room<'s>(&self, st: &'s mut HubState, name: &str, force: bool) -> Result<&'s mut Room, String> {
        let count = st.rooms.len();
        match st.rooms.entry(name.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                if !force && count >= self.limits.max_rooms {
                    return Err(format!(
                        "room limit reached: this server has {} rooms (--max-rooms); join an existing one",
                        self.limits.max_rooms
                    ));
                }
                let room = Room::default();
                self.index.insert(name, &room.stats);
                Ok(e.insert(room))
            }
        }
    }

    /// Whether a message may be posted to `room` without creating one past `--max-rooms`.
    pub fn may_post_to(&self, room: &str) -> Result<(), String> {
        let st = self.state.lock();
        if st.rooms.contains_key(room) || st.rooms.len() < self.limits.max_rooms {
            Ok(())
        } else {
            Err(format!("room limit reached: this server has {} rooms (--max-rooms)", self.limits.max_rooms))
        }
    }

    /// Refuses a join past `--max-rooms-per-client`.
    pub(super) fn check_room_count(&self, conn: &Conn) -> Result<(), String> {
        let max = self.limits.per_client;
        if conn.rooms.lock().len() >= max {
            return Err(format!("you are in {max} rooms already, the most one connection may be in; leave one first"));
        }
        Ok(())
    }

    /// Adds `conn` to `room`: it gets the room's `presence`, the others a `join` (at the
    /// next tick; see `notices.rs`).
    pub fn join_room(&self, conn: &Arc<Conn>, room: &str) -> Result<(), String> {
        {
            let mut st = self.state.lock();
            if st.rooms.get(room).is_some_and(|r| r.is_member(conn.id)) {
                return Err(format!("already in room {room:?}"));
            }
            self.check_room_count(conn)?;
            self.room(&mut st, room, false)?;
            self.attach(&mut st, conn, room);
        }
        conn.flush();
        Ok(())
    }

    /// Under the lock: presence to `conn`, membership, and a `join` queued for the others.
    pub(super) fn attach(&self, st: &mut HubState, conn: &Arc<Conn>, room_name: &str) {
        let (name, user) = (conn.name(), conn.user());
        // The callers checked the room budget (or the room exists already).
        let room = st.rooms.entry(room_name.to_string()).or_default();
        let first_of_user = !room.users.contains_key(&user);
        // Presence lists each user once (two tabs are one person), the newcomer first, and at
        // most PRESENCE_LIST_MAX (or the join-notice limit, if lower) users.
        // Members on other instances (cluster mode) are listed after local ones.
        let remote = self.remote.lock();
        let elsewhere: Vec<(u64, Arc<str>, Arc<str>)> = remote
            .get(room_name)
            .map(|list| list.iter().map(|(id, u, n)| (*id, Arc::from(u.as_str()), Arc::from(n.as_str()))).collect())
            .unwrap_or_default();
        drop(remote);
        let remote_only =
            elsewhere.iter().filter(|(_, u, _)| *u != user && !room.users.contains_key(u.as_ref())).count();
        let count = room.users.len() + usize::from(first_of_user) + remote_only;
        let mut seen = std::collections::HashSet::new();
        // Lazy: a crowd of thousands is walked only until the list is full.
        let listed: Vec<(u64, Arc<str>, Arc<str>)> = std::iter::once((conn.id, user.clone(), name.clone()))
            .chain(room.members.iter().map(|c| (c.id, c.user(), c.name())))
            .chain(elsewhere)
            .filter(|(_, u, _)| seen.insert(u.clone()))
            .take(self.join_notice_limit.clamp(1, PRESENCE_LIST_MAX))
            .collect();
        let members: Vec<Member<'_>> = listed.iter().map(|(id, u, n)| Member { id: *id, user: u, name: n }).collect();
        let presence = ServerMsg::Presence { room: room_name, seq: room.last_seq, count, members: &members }.to_frame();
        if conn.kind() == Kind::Chat {
            conn.push(presence);
        }
        let announce = first_of_user && !room.members.is_empty() && room.members.len() < self.join_notice_limit;
        Arc::make_mut(&mut room.members).push(Arc::clone(conn));
        *room.users.entry(user).or_insert(0) += 1;
        room.publish_users();
        conn.rooms.lock().push(room_name.to_string());
        if announce {
            self.queue_notice(st, room_name, true, conn);
        }
        // Its presence was the room as of now: no notice queued before this reaches it.
        Self::entered_after_notices(st, room_name, conn);
    }

    /// Relays `conn`'s `typing` to the other members of `room`. Not in rooms above the
    /// join-notice limit: there every keystroke pause would cost a delivery per member.
    pub fn relay_typing(&self, conn: &Arc<Conn>, room: &str, expires_ms: u64) -> Result<(), String> {
        if !self.state.lock().rooms.get(room).is_some_and(|r| r.is_member(conn.id)) {
            return Err(format!("not in room {room:?}; join it first"));
        }
        let frame =
            ServerMsg::Typing { room, id: conn.id, user: &conn.user(), name: &conn.name(), expires_ms }.to_frame();
        self.relay_typing_frame(room, &frame, Some(conn.id));
        Ok(())
    }

    /// A `typing` from another instance (through the backplane's log), to the members here.
    pub fn relay_remote_typing(&self, room: &str, id: u64, user: &str, name: &str, expires_ms: u64) {
        self.relay_typing_frame(room, &ServerMsg::Typing { room, id, user, name, expires_ms }.to_frame(), None);
    }

    fn relay_typing_frame(&self, room: &str, frame: &bytes::Bytes, skip: Option<u64>) {
        let mut overflowed = vec![];
        let members = {
            let mut st = self.state.lock();
            let Some(r) = st.rooms.get_mut(room) else { return };
            if r.members.len() > self.join_notice_limit {
                return;
            }
            // The typist's `join` (if still waiting for the tick) goes first.
            self.send_notices(&mut r.pending, &r.members, room, &mut overflowed);
            overflowed.extend(self.push_to(&r.members, frame, skip));
            r.members.clone()
        };
        self.finish_fan_out(&members, skip, overflowed);
    }

    /// Removes `conn` from `room`: it gets its `leave` now, everyone left there at the next
    /// tick (see `notices.rs`).
    pub fn leave_room(&self, conn: &Arc<Conn>, room: &str) -> Result<(), String> {
        {
            let mut st = self.state.lock();
            if !st.rooms.get(room).is_some_and(|r| r.is_member(conn.id)) {
                return Err(format!("not in room {room:?}"));
            }
            let leave = ServerMsg::Leave { room, id: conn.id, user: &conn.user(), name: &conn.name() }.to_frame();
            conn.push(leave);
            self.detach(&mut st, conn, room, true);
        }
        conn.flush();
        Ok(())
    }

    /// Under the lock: drops `conn` from `room`, queueing a `leave` for the rest if
    /// `announce` and this was the last member of its user.
    pub(super) fn detach(&self, st: &mut HubState, conn: &Conn, room_name: &str, announce: bool) {
        conn.rooms.lock().retain(|r| r != room_name);
        let Some(room) = st.rooms.get_mut(room_name) else { return };
        let Some(pos) = room.members.iter().position(|c| c.id == conn.id) else { return };
        Arc::make_mut(&mut room.members).remove(pos);
        let user = conn.user();
        let last_of_user = match room.users.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                room.users.remove(&user);
                true
            }
        };
        room.publish_users();
        room.release_cache_if_unused();
        let left = room.members.len();
        if announce && last_of_user && !st.closed && left > 0 && left < self.join_notice_limit {
            self.queue_notice(st, room_name, false, conn);
        }
        self.forget_if_empty(st, room_name);
    }

    /// Removes a room that has nothing left: no members here or elsewhere, no history, no
    /// resume in progress.
    pub(super) fn forget_if_empty(&self, st: &mut HubState, room_name: &str) {
        if st.rooms.get(room_name).is_some_and(|r| {
            r.members.is_empty()
                && r.last_seq == 0
                && r.resuming == 0
                && r.stats.remote_only.load(Ordering::Relaxed) == 0
        }) {
            st.rooms.remove(room_name);
            self.index.remove(room_name);
        }
    }
}
