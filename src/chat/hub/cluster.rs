//! The hub's side of a cluster (`--redis`): this instance's members for the others, and
//! the others' members folded into presence, counts and join/leave notices (part of the
//! hub; see `mod.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::chat::protocol::ServerMsg;

use super::{Hub, RemoteMember, flush_all};

impl Hub {
    /// This instance's members per room, each user once with one of its connection ids
    /// (for the other instances).
    pub fn local_presence(&self) -> HashMap<String, Vec<RemoteMember>> {
        let st = self.state.lock();
        st.rooms
            .iter()
            .filter(|(_, r)| !r.users.is_empty())
            .map(|(room, r)| {
                let mut seen = std::collections::HashSet::new();
                let members = r
                    .members
                    .iter()
                    .filter(|c| seen.insert(c.user()))
                    .map(|c| (c.id, c.user().to_string(), c.name().to_string()))
                    .collect();
                (room.clone(), members)
            })
            .collect()
    }

    /// Every user connected here (chat clients), with the name it shows (for the other
    /// instances: a `dm` to a name or user finds them).
    pub fn local_users(&self) -> HashMap<String, String> {
        let st = self.state.lock();
        st.users
            .iter()
            .filter_map(|(user, conns)| Some((user.to_string(), conns.first()?.name().to_string())))
            .collect()
    }

    /// Replaces what the other instances have (from the backplane), and tells local members
    /// who arrived, left or was renamed elsewhere since the last snapshot: a `join` for a
    /// user new to the room, a `leave` for one gone from it (also when its instance crashed
    /// and its entry expired), a `name` for one whose name changed. Users also present here
    /// were announced locally already.
    pub fn set_remote_presence(&self, new: HashMap<String, Vec<RemoteMember>>) {
        let mut overflowed = vec![];
        let mut to_flush = vec![];
        {
            let mut st = self.state.lock();
            let mut remote = self.remote.lock();
            let mut rooms: Vec<String> = remote.keys().chain(new.keys()).cloned().collect();
            rooms.sort_unstable();
            rooms.dedup();
            for room_name in &rooms {
                let before = remote.get(room_name).map(Vec::as_slice).unwrap_or_default();
                let after = new.get(room_name).map(Vec::as_slice).unwrap_or_default();
                if !after.is_empty() {
                    // A room that exists elsewhere exists here too (for listings and joins).
                    let _ = self.room(&mut st, room_name, true);
                }
                let Some(room) = st.rooms.get_mut(room_name) else { continue };
                let remote_only = after.iter().filter(|(_, u, _)| !room.users.contains_key(u.as_str())).count();
                room.stats.remote_only.store(remote_only, Ordering::Relaxed);
                if room.members.is_empty() || room.members.len() >= self.join_notice_limit {
                    continue;
                }
                let here = |user: &str| room.users.contains_key(user);
                let mut frames = vec![];
                for (id, user, name) in after.iter().filter(|(_, u, _)| !here(u)) {
                    match find(before, user) {
                        None => frames.push(ServerMsg::Join { room: room_name, id: *id, user, name }.to_frame()),
                        Some((_, _, old)) if old != name => {
                            frames.push(ServerMsg::Name { id: *id, user, name, old }.to_frame())
                        }
                        Some(_) => {}
                    }
                }
                for (id, user, name) in before.iter().filter(|(_, u, _)| find(after, u).is_none() && !here(u)) {
                    frames.push(ServerMsg::Leave { room: room_name, id: *id, user, name }.to_frame());
                }
                if !frames.is_empty() {
                    // This instance's own notices, if still waiting for the tick, go first.
                    self.send_notices(&mut room.pending, &room.members, room_name, &mut overflowed);
                }
                for frame in &frames {
                    overflowed.extend(self.push_to(&room.members, frame, None));
                }
                if !frames.is_empty() {
                    to_flush.push(room.members.clone());
                }
            }
            *remote = new;
            drop(remote);
            for room_name in &rooms {
                self.forget_if_empty(&mut st, room_name);
            }
        }
        for members in &to_flush {
            flush_all(members, None);
        }
        self.close_overflowed(overflowed);
    }
}

/// `user`'s entry in a room's remote member list.
fn find<'l>(list: &'l [RemoteMember], user: &str) -> Option<&'l RemoteMember> {
    list.iter().find(|(_, u, _)| u == user)
}
