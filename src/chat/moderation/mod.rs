//! Moderation: who may act (roles), the bans and mutes in force, and the actions
//! (`actions.rs`) with their requests (`request.rs`). The way in (`net`) asks here at
//! every door — the upgrade, the API, each `message`, `dm` and `typing` — and passes the
//! requests of moderators here.
//!
//! Everything keys on user ids (a display name in a request is resolved to its holder
//! first): a ban outlives any name its user takes. Bans and mutes live in the store (so a
//! restart keeps them) and in memory here (so a check is a short read lock, not a query);
//! with the backplane, every action travels the cluster's log and each instance applies it
//! to its own store, memory and connections (`apply_remote`).

pub mod actions;
pub mod request;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::store::{Sanction, Store, StoreError};

/// What a signed-in user may moderate (a JWT's `roles` and `mod_rooms` claims).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Member,
    /// `"mod"`: the rooms these patterns cover (names, or `prefix*`).
    Mod(Vec<String>),
    /// `"admin"`: every room, and the server-wide actions (ban, audit, purge).
    Admin,
}

/// Who performs an action.
#[derive(Clone, Debug)]
pub enum Actor {
    /// `--admin-token`: every right; the audit log says "admin token".
    Token,
    /// A user: a moderator, an admin, or a member deleting its own message.
    User { user: Arc<str>, role: Role },
}

/// How the audit log names the admin token.
pub const ADMIN_TOKEN_ACTOR: &str = "admin token";

impl Actor {
    /// As the audit log and sanctions name it.
    pub fn label(&self) -> String {
        match self {
            Actor::Token => ADMIN_TOKEN_ACTOR.into(),
            Actor::User { user, .. } => user.to_string(),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Actor::Token | Actor::User { role: Role::Admin, .. })
    }

    /// Whether this actor moderates `room`.
    pub fn moderates(&self, room: &str) -> bool {
        match self {
            Actor::Token | Actor::User { role: Role::Admin, .. } => true,
            Actor::User { role: Role::Mod(patterns), .. } => {
                patterns.iter().any(|p| crate::chat::protocol::pattern_matches(p, room))
            }
            Actor::User { role: Role::Member, .. } => false,
        }
    }

    /// Whether this actor moderates anything at all.
    pub fn is_moderator(&self) -> bool {
        !matches!(self, Actor::User { role: Role::Member, .. })
    }

    pub fn user(&self) -> Option<&str> {
        match self {
            Actor::Token => None,
            Actor::User { user, .. } => Some(user),
        }
    }
}

/// Bans and mutes in force at most, server-wide…
pub const MAX_IN_FORCE: usize = 10_000;
/// …and given by one moderator (admins are bounded by the total only).
pub const MAX_PER_MODERATOR: usize = 500;

/// The actions, as `/metrics` labels and audit `action`s.
pub const ACTIONS: [&str; 9] = ["kick", "ban", "unban", "mute", "unmute", "delete", "announce", "purge", "refused"];

/// The bans and mutes in force, the admins seen, and the action counters.
pub struct Moderation {
    /// Sanctions in force (expired ones are dropped as they are met). A short list: a
    /// check scans it under a read lock, and skips even that while `any` is false.
    in_force: RwLock<Vec<Sanction>>,
    any: AtomicBool,
    /// Users seen signed in with the admin role: moderators may not act on them.
    admins: Mutex<HashSet<String>>,
    counts: [AtomicU64; ACTIONS.len()],
}

impl Moderation {
    /// The sanctions the store holds in force.
    pub fn load(store: &dyn Store) -> Result<Moderation, StoreError> {
        let list = store.sanctions(crate::clock::now_ms())?;
        Ok(Moderation {
            any: AtomicBool::new(!list.is_empty()),
            in_force: RwLock::new(list),
            admins: Mutex::new(HashSet::new()),
            counts: Default::default(),
        })
    }

    /// Counts an action (or a refusal: `"refused"`) for `/metrics`.
    pub fn count(&self, action: &str) {
        if let Some(i) = ACTIONS.iter().position(|a| *a == action) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (action, count) for `/metrics`.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        ACTIONS.iter().zip(&self.counts).map(|(a, c)| (*a, c.load(Ordering::Relaxed))).collect()
    }

    /// `user` signed in as an admin (an upgrade or an API call with an admin JWT).
    pub fn saw_admin(&self, user: &str) {
        let mut admins = self.admins.lock();
        if !admins.contains(user) {
            admins.insert(user.to_string());
        }
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.lock().contains(user)
    }

    /// Why `user` (if any) from `address` (canonical: an IPv4 address or an IPv6 /64) may
    /// not come in: `"banned until …: reason"`. `admin`: the caller holds the admin role (a
    /// moderator's ban does not hold against it).
    pub fn ban_of(&self, user: Option<&str>, address: Option<IpAddr>, admin: bool) -> Option<String> {
        // Every upgrade and API call asks: with nothing in force, one atomic and no string.
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let address = address.map(|a| a.to_string());
        self.find(|s| {
            s.kind == "ban"
                && (s.by_admin || !admin)
                && match s.target_kind.as_str() {
                    "user" => user == Some(s.target.as_str()),
                    _ => address.as_deref() == Some(s.target.as_str()),
                }
        })
        .map(|s| format!("banned{}: {}", until(s.until), s.reason))
    }

    /// Why `user` may not speak in `room`: `"you are muted until …: reason"`. On every
    /// `message`, `dm` and `typing`: with nothing in force it reads one atomic, and it asks
    /// whether `user` is an admin only of a mute that names it.
    pub fn mute_of(&self, user: &str, room: &str) -> Option<String> {
        self.find(|s| {
            s.kind == "mute"
                && s.target == user
                && (s.room.is_empty() || s.room == room)
                && (s.by_admin || !self.is_admin(user))
        })
        .map(|s| format!("you are muted{}: {}", until(s.until), s.reason))
    }

    /// The first sanction in force that `matches`; drops the ones that ran out.
    fn find(&self, matches: impl Fn(&Sanction) -> bool) -> Option<Sanction> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let now = crate::clock::now_ms();
        let found = {
            let list = self.in_force.read();
            if list.iter().all(|s| s.in_force(now)) {
                return list.iter().find(|s| matches(s)).cloned();
            }
            list.iter().find(|s| s.in_force(now) && matches(s)).cloned()
        };
        let mut list = self.in_force.write();
        list.retain(|s| s.in_force(now));
        self.any.store(!list.is_empty(), Ordering::Release);
        found
    }

    /// Whether `by` may impose one more sanction: the list every message is checked against
    /// stays short — at most `MAX_IN_FORCE` in all, and a moderator (not an admin) at most
    /// `MAX_PER_MODERATOR` of its own, so one moderator's script cannot fill it.
    pub fn room_for(&self, by: &str, admin: bool) -> Result<(), String> {
        let now = crate::clock::now_ms();
        let list = self.in_force.read();
        let live = list.iter().filter(|s| s.in_force(now));
        if live.clone().count() >= MAX_IN_FORCE {
            return Err(format!("{MAX_IN_FORCE} bans and mutes are in force, the most this server keeps; lift some"));
        }
        if !admin && live.filter(|s| s.by == by).count() >= MAX_PER_MODERATOR {
            return Err(format!("you have {MAX_PER_MODERATOR} bans and mutes in force, the most one moderator may"));
        }
        Ok(())
    }

    /// Adds a sanction (a copy already here is ignored).
    pub fn add(&self, sanction: Sanction) {
        let mut list = self.in_force.write();
        if !list.iter().any(|s| s.id == sanction.id) {
            list.push(sanction);
        }
        self.any.store(true, Ordering::Release);
    }

    /// Removes sanction `id`; returns it if it was in force.
    pub fn remove(&self, id: u64) -> Option<Sanction> {
        let mut list = self.in_force.write();
        let pos = list.iter().position(|s| s.id == id)?;
        let gone = list.remove(pos);
        self.any.store(!list.is_empty(), Ordering::Release);
        Some(gone)
    }

    /// The sanctions of `kind` in force, oldest first.
    pub fn list(&self, kind: &str) -> Vec<Sanction> {
        let now = crate::clock::now_ms();
        self.in_force.read().iter().filter(|s| s.kind == kind && s.in_force(now)).cloned().collect()
    }
}

/// `" until 2026-12-05T16:00:00Z"`, or nothing for a sanction without an end.
fn until(ms: u64) -> String {
    if ms == 0 { String::new() } else { format!(" until {}", crate::clock::rfc3339(ms)) }
}

#[cfg(test)]
mod tests;
