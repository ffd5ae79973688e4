//! The hub's side of a cluster (`--redis`): this instance's members for the others, and
//! the others' members folded into presence, counts and join/leave notices (part of the
//! hub; see `mod.rs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::chat::protocol::ServerMsg;

use super::{Hub, flush_all};

impl Hub {
    /// This instance's members per room, each name once with one of its ids (for the other
    /// instances).
    pub fn local_presence(&self) -> HashMap<String, Vec<(u64, String)>> {
        let st = self.state.lock();
        st.rooms
            .iter()
            .filter(|(_, r)| !r.names.is_empty())
            .map(|(room, r)| {
                let mut seen = std::collections::HashSet::new();
                let members =
                    r.members.iter().filter(|c| seen.insert(c.name())).map(|c| (c.id, c.name().to_string())).collect();
                (room.clone(), members)
            })
            .collect()
    }

    /// Replaces what the other instances have (from the backplane), and tells local members
    /// who arrived or left elsewhere since the last snapshot: a `join` for a name new to the
    /// room, a `leave` for one gone from it (also when its instance crashed and its entry
    /// expired). Names also present here were announced locally already.
    pub fn set_remote_presence(&self, new: HashMap<String, Vec<(u64, String)>>) {
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
                let Some(room) = st.rooms.get(room_name) else { continue };
                let remote_only = after.iter().filter(|(_, n)| !room.names.contains_key(n.as_str())).count();
                room.stats.remote_only.store(remote_only, Ordering::Relaxed);
                if room.members.is_empty() || room.members.len() >= self.join_notice_limit {
                    continue;
                }
                let has = |list: &[(u64, String)], name: &str| list.iter().any(|(_, n)| n == name);
                let mut frames = vec![];
                for (id, name) in after.iter().filter(|(_, n)| !has(before, n) && !room.names.contains_key(n.as_str()))
                {
                    frames.push(ServerMsg::Join { room: room_name, id: *id, name }.to_frame());
                }
                for (id, name) in before.iter().filter(|(_, n)| !has(after, n) && !room.names.contains_key(n.as_str()))
                {
                    frames.push(ServerMsg::Leave { room: room_name, id: *id, name }.to_frame());
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
        if !overflowed.is_empty() {
            overflowed.sort_by_key(|c| c.id);
            overflowed.dedup_by_key(|c| c.id);
            self.close_overflowed(overflowed);
        }
    }
}
