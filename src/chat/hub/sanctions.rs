//! What moderation does to connections and rooms (part of the hub; see `mod.rs`; the
//! rules are in `chat/moderation/`): close a user's or an address's connections, find the
//! rooms a user is in, take a deleted message out of every member's view.

use std::net::IpAddr;
use std::sync::Arc;

use crate::chat::protocol::ServerMsg;
use crate::conn::Conn;

use super::{CloseCode, Hub};

/// Close code (private range, RFC 6455 §7.4.2) for a connection a moderator closed
/// (kicked or banned); the reason says why. Reconnecting is allowed unless banned.
pub const KICKED_CODE: u16 = 4003;

impl Hub {
    /// Closes every connection here of `user` with [`KICKED_CODE`] and `reason`; how many.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        let conns: Vec<Arc<Conn>> = self.state.lock().users.get(user).cloned().unwrap_or_default();
        self.close_each(&conns, reason)
    }

    /// Closes every connection here from `address` (see `Conn::address`); how many.
    pub fn close_address(&self, address: IpAddr, reason: &str) -> usize {
        let conns: Vec<Arc<Conn>> =
            self.snapshot().iter().filter(|c| c.address() == Some(address) && c.kind().is_chat()).cloned().collect();
        self.close_each(&conns, reason)
    }

    fn close_each(&self, conns: &[Arc<Conn>], reason: &str) -> usize {
        for conn in conns {
            log::info!("client {} ({}): closed by a moderator: {reason}", conn.id, conn.peer);
            self.close_client(conn, CloseCode::Library(KICKED_CODE), reason);
        }
        conns.len()
    }

    /// Whether `user` is connected, here or on another instance.
    pub fn is_connected(&self, user: &str) -> bool {
        self.state.lock().users.contains_key(user) || self.names.is_remote(user)
    }

    /// The rooms `user` is in, here or (with the backplane) on another instance.
    pub fn rooms_of_user(&self, user: &str) -> Vec<String> {
        let mut rooms: Vec<String> = {
            let st = self.state.lock();
            st.users.get(user).into_iter().flatten().flat_map(|c| c.rooms.lock().clone()).collect()
        };
        for (room, members) in self.remote.lock().iter() {
            if members.iter().any(|(_, u, _)| u == user) {
                rooms.push(room.clone());
            }
        }
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Message `seq` of `room` was deleted (its tombstone is stored): its frame leaves the
    /// recent-frames cache (a resume now reads the tombstone from the store), and every
    /// member here gets `{"type":"deleted","room","seq"}`. A conversation's two users get
    /// it on their connections.
    pub fn message_deleted(&self, room: &str, seq: u64) {
        let frame = ServerMsg::Deleted { room, seq }.to_frame();
        let mut overflowed = vec![];
        let audience: Vec<Arc<Conn>> = {
            let mut st = self.state.lock();
            if let Some((a, b)) = crate::chat::protocol::dm_parties(room) {
                let mut conns: Vec<Arc<Conn>> = st.users.get(a).cloned().unwrap_or_default();
                if a != b {
                    conns.extend(st.users.get(b).cloned().unwrap_or_default());
                }
                overflowed.extend(self.push_to(&conns, &frame, None));
                conns
            } else if let Some(r) = st.rooms.get_mut(room) {
                if let Some(pos) = r.recent.iter().position(|(s, _)| *s == seq)
                    && let Some((_, old)) = r.recent.remove(pos)
                {
                    r.recent_bytes -= old.len();
                }
                overflowed.extend(self.push_to(&r.members, &frame, None));
                r.members.to_vec()
            } else {
                vec![]
            }
        };
        self.finish_fan_out(&audience, None, overflowed);
    }
}
