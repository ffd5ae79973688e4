//! Who is here (part of the hub; see `mod.rs`): a connection's welcome, the name a user
//! shows (here, elsewhere in a cluster, or reserved), renames, and a guest renamed when the
//! name it shows turns out to be another user's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::chat::moderation::Role;
use crate::chat::protocol::ServerMsg;
use crate::conn::{Conn, Kind};

use super::Hub;

impl Hub {
    /// Makes `conn` a chat client and sends its welcome (before anything else can be
    /// queued): its connection id, user id and name, and for a guest the credential that
    /// brings it back as the same user, and for a moderator its role.
    pub fn welcome(&self, conn: &Arc<Conn>, identity: Option<&str>, role: &Role) {
        let (name, user) = (conn.name(), conn.user());
        let (role, mod_rooms) = match role {
            Role::Admin => (Some("admin"), None),
            Role::Mod(rooms) => (Some("mod"), Some(rooms.as_slice())),
            Role::Member => (None, None),
        };
        let welcome = ServerMsg::Welcome { id: conn.id, user: &user, name: &name, identity, role, mod_rooms };
        let _st = self.state.lock();
        conn.set_kind(Kind::Chat);
        conn.push(welcome.to_frame());
        drop(_st);
        conn.flush();
    }

    /// The name `user` shows: on a connection here, else on another instance, else the one
    /// reserved for it (a JWT user).
    pub fn name_of(&self, user: &str) -> Option<Arc<str>> {
        let here = self.state.lock().users.get(user).and_then(|conns| conns.first().map(|c| c.name()));
        here.or_else(|| self.names.name_of(user))
    }

    /// Renames `conn` (its new name already held in `names`) and tells the members of its
    /// rooms (and itself). Nobody outside those rooms learns of it: a server-wide
    /// announcement would tell everyone who is where. Under the hub lock, so a `leave` or
    /// `presence` built meanwhile shows one name or the other, never a mix.
    pub fn rename(&self, conn: &Arc<Conn>, new: &Arc<str>) {
        let mut overflowed = vec![];
        let audience = {
            let mut st = self.state.lock();
            let old = conn.set_name(new);
            self.names.release(&conn.user(), &old);
            let frame = ServerMsg::Name { id: conn.id, user: &conn.user(), name: new, old: &old }.to_frame();
            let rooms = conn.rooms.lock().clone();
            let mut audience: Vec<Arc<Conn>> = vec![Arc::clone(conn)];
            let mut seen = std::collections::HashSet::from([conn.id]);
            for room in rooms {
                if let Some(r) = st.rooms.get_mut(&room) {
                    // A `join` still waiting for the tick shows the old name: it goes first.
                    self.send_notices(&mut r.pending, &r.members, &room, &mut overflowed);
                    audience.extend(r.members.iter().filter(|c| seen.insert(c.id)).cloned());
                }
            }
            overflowed.extend(self.push_to(&audience, &frame, None));
            audience
        };
        self.finish_fan_out(&audience, None, overflowed);
    }

    /// `owner` now has the name whose key is `key` (a signed-in user's own, or, in a
    /// cluster, one another instance granted first): every guest connection here of another
    /// user showing a name that looks the same is renamed to a guest name of its own and
    /// told so with a `name` event. From here on it receives nothing meant for the owner
    /// (delivery follows user ids, never names).
    pub fn take_name_back(&self, owner: &str, key: &str, store: &dyn crate::store::Store) {
        let holders: Vec<Arc<Conn>> = self
            .snapshot()
            .iter()
            .filter(|c| *c.user() != *owner && !c.name_locked.load(Ordering::Acquire))
            .filter(|c| c.kind().is_chat() && crate::chat::protocol::name_key(&c.name()) == key)
            .cloned()
            .collect();
        for conn in holders {
            let user = conn.user();
            let base = format!("guest-{}", crate::chat::names::short(&user));
            let fresh = self.names.hold_first_free(&user, &base, store);
            log::info!("client {}: renamed to {fresh}: its name belongs to another user", conn.id);
            self.rename(&conn, &fresh);
        }
    }
}
