//! Display names: labels people see, never identities. What decides who may read, receive
//! or be limited is the user id (`Conn::user`); a name only has to be unambiguous where
//! people see it. Two rules follow:
//!
//! - **Two users never hold names that look the same at once** (compared by
//!   [`protocol::name_key`]: NFKC, lower case). Every connection holds its name here from
//!   the moment it has one until it renames or leaves; a name held by one user is refused
//!   to every other.
//! - **A JWT user's name is theirs for good.** At a sign-in the name claim is *reserved*
//!   for that `sub` in the store (table `reserved_names`), so no restart reopens it; a
//!   second `sub` claiming the same name gets the first free `NAME-2`, `NAME-3`… (reserved
//!   for it in turn, so it is the same every time). A guest holding the name when its
//!   owner signs in is renamed by the hub; no guest may take a reserved name afterwards.
//!
//! Reservations are loaded at start (up to `MAX_CACHED`; past that the store is asked on
//! every claim), so checking a name costs no store read on the message path. Lock order:
//! `Names.state` is a leaf (taken after the hub's state, never held across a store call).
//!
//! **In a cluster** (`--redis`) the same rules hold across instances through a [`Ledger`]
//! (the backplane's, in Redis): a claim is granted there first, atomically; reservations
//! are kept there too; the names this instance holds are renewed every second and expire
//! a few seconds after a crash; a name released here is handed back at the next renewal
//! (a release happens under the hub lock, where no network call may). The users connected
//! elsewhere, with their names, come with the cluster's presence (`set_remote`). While Redis
//! is unreachable, names are checked on this instance only.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::chat::protocol::{self, MAX_NAME_CHARS};
use crate::store::Store;

/// Reservations kept in memory at most; past it the store is the only record.
const MAX_CACHED: usize = 100_000;
/// Suffixes tried for a JWT name claim that another user reserved (`NAME-2` … `NAME-99`).
const MAX_SUFFIX: u32 = 99;

/// What a client hears when it asks for a name someone else holds or owns.
pub const NAME_TAKEN: &str = "that name belongs to someone else; choose another";

struct Held {
    user: Arc<str>,
    /// Connections of `user` holding it.
    conns: usize,
}

#[derive(Default)]
struct State {
    /// Names held now, by key.
    held: HashMap<String, Held>,
    /// Reservations (key → user), all of them while `complete`.
    reserved: HashMap<String, Arc<str>>,
    /// Display name of each reserving user (a `dm` to someone offline still shows a name).
    reserved_names: HashMap<Arc<str>, Arc<str>>,
    /// `reserved` holds every reservation in the store.
    complete: bool,
    /// Users connected on other instances, with the name each shows (from the cluster's
    /// presence, about once a second), and the same by name key.
    remote: HashMap<String, String>,
    remote_by_key: HashMap<String, String>,
    /// Names released here since the last renewal, for the ledger: (key, user).
    released: Vec<(String, String)>,
}

/// The cluster-wide record of names (see the module doc). Every call may fail (Redis
/// unreachable); the caller then decides on this instance's knowledge alone.
pub trait Ledger: Send + Sync {
    /// `user` holds `key` now (`force`: even from another holder; an owner's sign-in),
    /// unless another user holds or owns it: then `Some(that user)`.
    fn claim(&self, key: &str, user: &str, force: bool) -> Result<Option<String>, String>;
    /// Reserves `key` for `user` unless reserved already; the owner either way.
    fn reserve(&self, key: &str, user: &str) -> Result<String, String>;
    /// Who owns or holds `key`.
    fn owner(&self, key: &str) -> Result<Option<String>, String>;
    /// Renews what this instance holds and hands back what it released; returns the held
    /// keys it lost, with who has them now.
    fn renew(&self, held: &[(String, String)], released: &[(String, String)]) -> Result<Vec<(String, String)>, String>;
}

impl State {
    /// One more connection of `user` holds the name whose key is `key`.
    fn take(&mut self, key: String, user: &Arc<str>) {
        match self.held.get_mut(&key) {
            Some(h) if h.user == *user => h.conns += 1,
            _ => {
                self.held.insert(key, Held { user: user.clone(), conns: 1 });
            }
        }
    }
}

pub struct Names {
    state: Mutex<State>,
    /// With `--redis`: the cluster's record (set once at start).
    ledger: OnceLock<Arc<dyn Ledger>>,
    /// Reservations kept in memory at most (`MAX_CACHED`; tests use a few).
    max_cached: usize,
}

impl Default for Names {
    fn default() -> Self {
        Names { state: Mutex::default(), ledger: OnceLock::new(), max_cached: MAX_CACHED }
    }
}

impl Names {
    /// Joins the cluster's record of names (at start, with `--redis`).
    pub fn set_ledger(&self, ledger: Arc<dyn Ledger>) {
        let _ = self.ledger.set(ledger);
    }

    /// Loads the store's reservations (at start).
    pub fn load(&self, store: &dyn Store) {
        match store.reserved_names(self.max_cached + 1) {
            Ok(rows) => {
                let mut st = self.state.lock();
                st.complete = rows.len() <= self.max_cached;
                for (key, user, name) in rows.into_iter().take(self.max_cached) {
                    let user: Arc<str> = Arc::from(user);
                    st.reserved_names.insert(user.clone(), Arc::from(name));
                    st.reserved.insert(key, user);
                }
            }
            Err(e) => log::error!("cannot read the reserved names: {e}; each claim will ask the store"),
        }
    }

    /// The user a name (by key) is reserved for, from memory, else the store (not the
    /// ledger: a claim asks it anyway).
    fn owner(&self, key: &str, store: &dyn Store) -> Option<Arc<str>> {
        {
            let st = self.state.lock();
            if let Some(user) = st.reserved.get(key) {
                return Some(user.clone());
            }
            if st.complete {
                return None;
            }
        }
        match store.name_owner(key) {
            Ok(owner) => owner.map(Arc::from),
            // Unknown: refuse rather than hand out a name that may be someone's.
            Err(e) => {
                log::warn!("cannot check a name's owner: {e}");
                Some(Arc::from(""))
            }
        }
    }

    /// `user` (a guest, or a JWT user's connection) starts holding `name`, unless another
    /// user holds or owns it.
    pub fn hold(&self, user: &Arc<str>, name: &Arc<str>, store: &dyn Store) -> Result<(), String> {
        let key = protocol::name_key(name);
        if self.owner(&key, store).is_some_and(|o| o != *user) {
            return Err(NAME_TAKEN.into());
        }
        let mut st = self.state.lock();
        // Again under the lock: a reservation made since (by a sign-in) wins.
        if st.reserved.get(&key).is_some_and(|o| o != user) {
            return Err(NAME_TAKEN.into());
        }
        if st.held.get(&key).is_some_and(|h| h.user != *user) {
            return Err(NAME_TAKEN.into());
        }
        // Cluster-wide (unless this user holds it here already, which the ledger knows).
        if !st.held.contains_key(&key)
            && let Some(ledger) = self.ledger.get()
        {
            drop(st);
            if let Ok(Some(_other)) = ledger.claim(&key, user, false) {
                return Err(NAME_TAKEN.into());
            }
            st = self.state.lock();
            if st.held.get(&key).is_some_and(|h| h.user != *user) {
                return Err(NAME_TAKEN.into());
            }
        }
        st.take(key, user);
        Ok(())
    }

    /// A connection of `user` stops holding `name` (renamed, or gone).
    pub fn release(&self, user: &str, name: &str) {
        let key = protocol::name_key(name);
        let mut st = self.state.lock();
        if let Some(h) = st.held.get_mut(&key)
            && *h.user == *user
        {
            h.conns -= 1;
            if h.conns == 0 {
                st.held.remove(&key);
                if self.ledger.get().is_some() {
                    st.released.push((key, user.to_string()));
                }
            }
        }
    }

    /// The first name a guest may hold: `base`, else `base-2`, `base-3`… (a collision of
    /// the short id, or a name a JWT user reserved).
    pub fn hold_first_free(&self, user: &Arc<str>, base: &str, store: &dyn Store) -> Arc<str> {
        for n in 1..=MAX_SUFFIX {
            let name: Arc<str> = Arc::from(candidate(base, n));
            if self.hold(user, &name, store).is_ok() {
                return name;
            }
        }
        // 99 names of one base taken: the user id itself is unique.
        let name: Arc<str> = Arc::from(candidate(&format!("guest-{}", short(user)), 1));
        let _ = self.hold(user, &name, store);
        name
    }

    /// Reserves a JWT name claim for `user` (its `sub`): the claim itself if it is free or
    /// theirs, else the first free `claim-N`. Returns the display name, now reserved (in
    /// the store first, then here), and whether another user holds it at this moment (a
    /// guest the caller must rename).
    pub fn reserve(&self, user: &Arc<str>, claim: &str, store: &dyn Store) -> Result<(Arc<str>, bool), String> {
        for n in 1..=MAX_SUFFIX {
            let name = candidate(claim, n);
            let key = protocol::name_key(&name);
            match self.owner(&key, store) {
                Some(owner) if owner != *user => continue,
                // Reserved for this user already (every sign-in after the first): no write.
                Some(_) => return Ok(self.reserved_for(user, key, name)),
                None => {}
            }
            // The cluster's reservation first (Redis unreachable: this instance's alone),
            // then this instance's store, so that a restart keeps it too.
            let ledger = self.ledger.get().and_then(|l| l.reserve(&key, user).ok());
            if ledger.is_some_and(|o| *o != **user) {
                continue;
            }
            match store.reserve_name(&key, user, &name) {
                Ok(owner) if *owner == **user => {}
                Ok(_) => continue,
                Err(e) => return Err(format!("cannot reserve your name: {e}")),
            }
            return Ok(self.reserved_for(user, key, name));
        }
        Err(format!("every name from {claim:?} to {claim:?}-{MAX_SUFFIX} belongs to another user"))
    }

    /// Notes that `name` (by `key`) is `user`'s; returns it, and whether another user holds
    /// it at this moment.
    fn reserved_for(&self, user: &Arc<str>, key: String, name: String) -> (Arc<str>, bool) {
        let name: Arc<str> = Arc::from(name);
        let mut st = self.state.lock();
        let taken = st.held.get(&key).is_some_and(|h| h.user != *user);
        if st.reserved.len() < self.max_cached || st.reserved.contains_key(&key) {
            st.reserved.insert(key, user.clone());
            st.reserved_names.insert(user.clone(), name.clone());
        } else {
            st.complete = false;
        }
        (name, taken)
    }

    /// The user holding `name` now (here, else on another instance), else the user it is
    /// reserved for.
    pub fn user_of(&self, name: &str, store: &dyn Store) -> Option<Arc<str>> {
        let key = protocol::name_key(name);
        {
            let st = self.state.lock();
            if let Some(h) = st.held.get(&key) {
                return Some(h.user.clone());
            }
            if let Some(user) = st.remote_by_key.get(&key) {
                return Some(Arc::from(user.as_str()));
            }
        }
        if let Some(owner) = self.owner(&key, store).filter(|u| !u.is_empty()) {
            return Some(owner);
        }
        let ledger = self.ledger.get()?;
        ledger.owner(&key).ok().flatten().map(Arc::from)
    }

    /// The name `user` shows on another instance, or the one reserved for it (the name a
    /// user connected here shows is its connections': `Hub::name_of`).
    pub fn name_of(&self, user: &str) -> Option<Arc<str>> {
        let st = self.state.lock();
        st.remote.get(user).map(|n| Arc::from(n.as_str())).or_else(|| st.reserved_names.get(user).cloned())
    }

    /// Whether `user` is connected on another instance (as of the last presence sync).
    pub fn is_remote(&self, user: &str) -> bool {
        self.state.lock().remote.contains_key(user)
    }

    /// The users connected elsewhere, with their names (from the backplane).
    pub fn set_remote(&self, users: HashMap<String, String>) {
        let by_key = users.iter().map(|(user, name)| (protocol::name_key(name), user.clone())).collect();
        let mut st = self.state.lock();
        st.remote = users;
        st.remote_by_key = by_key;
    }

    /// With a ledger: renews this instance's names and hands back those released. Returns
    /// the names lost to another user (the hub renames their holders here). Called about
    /// once a second by the backplane reader.
    pub fn renew(&self) -> Vec<(String, Arc<str>)> {
        let Some(ledger) = self.ledger.get() else { return vec![] };
        let (held, released) = {
            let mut st = self.state.lock();
            let held: Vec<(String, String)> = st.held.iter().map(|(k, h)| (k.clone(), h.user.to_string())).collect();
            let mut released = std::mem::take(&mut st.released);
            // Released, then held again by the same user (a reconnect): still theirs.
            released.retain(|(key, user)| st.held.get(key).is_none_or(|h| *h.user != **user));
            (held, released)
        };
        match ledger.renew(&held, &released) {
            Ok(lost) => lost.into_iter().map(|(key, other)| (key, Arc::from(other))).collect(),
            Err(_) => {
                // Try the releases again next time (a bounded list: past it, the oldest are
                // left to expire in Redis on their own).
                let mut st = self.state.lock();
                st.released.extend(released);
                let over = st.released.len().saturating_sub(self.max_cached);
                st.released.drain(..over);
                vec![]
            }
        }
    }
}

/// `base` (n = 1) or `base-n`, cut so that the whole fits `MAX_NAME_CHARS`.
fn candidate(base: &str, n: u32) -> String {
    if n == 1 {
        return base.chars().take(MAX_NAME_CHARS).collect();
    }
    let suffix = format!("-{n}");
    let keep = MAX_NAME_CHARS - suffix.len();
    let mut name: String = base.chars().take(keep).collect();
    // Names may not end in a space; cutting might have left one.
    name.truncate(name.trim_end().len());
    name + &suffix
}

/// The part of a user id a guest's default name shows.
pub fn short(user: &str) -> &str {
    let tail = user.rsplit('~').next().unwrap_or(user);
    tail.get(..6).unwrap_or(tail)
}

#[cfg(test)]
mod tests;
