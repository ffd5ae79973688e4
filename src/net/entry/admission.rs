//! Admission at accept: which connections may have a thread, before any byte is read.
//!
//! Every accepted socket gets a thread of its own (see `accept.rs`), so the number of
//! sockets that have not yet *earned* anything — no complete request head — must be bounded,
//! or a few hundred silent sockets would pin a few hundred threads. This registry counts
//! them:
//!
//! - **Pending** connections: accepted, request head not complete (a new connection, or an
//!   HTTP keep-alive connection idle between requests). At most `--max-handshakes` in all;
//!   a new one past that closes the *oldest* pending one, so a flood of silent sockets
//!   pushes out its own earlier sockets rather than anyone's fresh connection. At most
//!   `--max-handshakes-per-ip` per address: past that a new connection is closed at accept,
//!   unless that address has an idle keep-alive connection to give up instead (browsers
//!   behind one NAT keep many). A `--trusted-proxy` is exempt from the per-address cap: its
//!   clients are counted by `X-Forwarded-For` once their heads are read.
//! - **Busy** HTTP requests: head read, being answered. At most `--max-http-requests` in
//!   all and `--max-handshakes-per-ip` per client address (behind a trusted proxy, the
//!   `X-Forwarded-For` client's); past that, `503`.
//! - WebSocket sessions are counted by the hub and `--max-clients`, not here.
//!
//! Shutdown closes everything still registered here (the hub closes the sessions).
//!
//! Lock: `state`, a leaf lock (nothing else is taken while it is held). Terminating a
//! socket (`shutdown(2)`) under it is a non-blocking syscall, not I/O on the connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::conn::Conn;

/// Limits, from the config.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_pending: usize,
    pub max_pending_per_ip: usize,
    pub max_busy: usize,
    pub max_busy_per_ip: usize,
    pub trusted_proxies: Vec<IpAddr>,
}

pub struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Numbers pending entries in arrival order: the smallest key is the oldest.
    next_key: u64,
    /// Pending connections by age.
    pending: BTreeMap<u64, Entry>,
    /// Busy HTTP requests (kept to close them at shutdown), by pending-style key.
    busy: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, PerIp>,
    /// Set by `close_all`: nothing new is admitted.
    closed: bool,
}

struct Entry {
    conn: Arc<Conn>,
    /// Between keep-alive requests (rather than a new connection's first head).
    idle: bool,
    /// Counted against its address (not from a trusted proxy).
    counted: bool,
}

#[derive(Default)]
struct PerIp {
    pending: usize,
    busy: usize,
    /// Keys of this address's idle keep-alive connections, oldest first.
    idle: BTreeSet<u64>,
}

/// Why a connection was not admitted at accept.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    ShuttingDown,
    TooManyFromAddress,
}

/// One connection's registration. Dropping it unregisters the connection, on every exit
/// path (panics included).
pub struct Slot {
    admission: Arc<Admission>,
    conn: Arc<Conn>,
    ip: IpAddr,
    /// Whether `ip`'s per-address counts apply (not a trusted proxy).
    counted: bool,
    state: SlotState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Pending(u64),
    /// Busy, and the address charged for it (`None`: a trusted proxy's, not counted).
    Busy(u64, Option<IpAddr>),
    /// A WebSocket session now, or refused: nothing counted here any more.
    Done,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission { limits, state: Mutex::new(State::default()) }
    }

    /// Called by an accept loop for each new connection, before a thread is spent on it.
    pub fn accept(self: &Arc<Self>, conn: &Arc<Conn>) -> Result<Slot, Refused> {
        // Counted by address (an IPv6 /64), but a trusted proxy is known by its own address.
        let ip = crate::net::access::per_ip::address_of(conn.peer.ip());
        let counted = !self.limits.trusted_proxies.contains(&conn.peer.ip());
        let mut st = self.state.lock();
        if st.closed {
            return Err(Refused::ShuttingDown);
        }
        if counted {
            let per_ip = st.per_ip.get(&ip).map_or((0, None), |p| (p.pending, p.idle.first().copied()));
            if per_ip.0 >= self.limits.max_pending_per_ip {
                match per_ip.1 {
                    // Give up this address's oldest idle keep-alive connection instead.
                    Some(key) => st.evict(key),
                    None => return Err(Refused::TooManyFromAddress),
                }
            }
        }
        if st.pending.len() >= self.limits.max_pending
            && let Some(&oldest) = st.pending.keys().next()
        {
            st.evict(oldest);
        }
        let key = st.add_pending(conn, ip, counted, false);
        drop(st);
        Ok(Slot { admission: Arc::clone(self), conn: Arc::clone(conn), ip, counted, state: SlotState::Pending(key) })
    }

    /// Connections without a complete request head (for `/metrics`).
    pub fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// HTTP requests being answered (for `/metrics`).
    pub fn busy(&self) -> usize {
        self.state.lock().busy.len()
    }

    /// Shutdown: admits nothing more and closes every registered connection.
    pub fn close_all(&self) -> usize {
        let mut st = self.state.lock();
        st.closed = true;
        let mut n = 0;
        for e in st.pending.values() {
            e.conn.terminate();
            n += 1;
        }
        for c in st.busy.values() {
            c.terminate();
            n += 1;
        }
        n
    }
}

impl State {
    fn add_pending(&mut self, conn: &Arc<Conn>, ip: IpAddr, counted: bool, idle: bool) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.pending.insert(key, Entry { conn: Arc::clone(conn), idle, counted });
        if counted {
            let p = self.per_ip.entry(ip).or_default();
            p.pending += 1;
            if idle {
                p.idle.insert(key);
            }
        }
        key
    }

    /// Removes a pending entry; false if it was already gone (evicted).
    fn remove_pending(&mut self, key: u64, ip: IpAddr, counted: bool) -> bool {
        let Some(entry) = self.pending.remove(&key) else {
            return false;
        };
        if counted && let Some(p) = self.per_ip.get_mut(&ip) {
            p.pending -= 1;
            if entry.idle {
                p.idle.remove(&key);
            }
            self.forget_if_unused(ip);
        }
        true
    }

    /// Closes a pending connection to make room. Its thread sees the socket shut, ends, and
    /// finds its entry already gone.
    fn evict(&mut self, key: u64) {
        if let Some(entry) = self.pending.get(&key) {
            let (conn, counted) = (Arc::clone(&entry.conn), entry.counted);
            let ip = crate::net::access::per_ip::address_of(conn.peer.ip());
            log::info!("{}: closed to make room for newer connections (pending handshake)", conn.peer);
            conn.terminate();
            self.remove_pending(key, ip, counted);
        }
    }

    fn forget_if_unused(&mut self, ip: IpAddr) {
        if self.per_ip.get(&ip).is_some_and(|p| p.pending == 0 && p.busy == 0) {
            self.per_ip.remove(&ip);
        }
    }
}

impl Slot {
    /// The head is complete and it is an HTTP request from `client` (the socket's peer, or
    /// behind a trusted proxy the `X-Forwarded-For` client): counts it as busy, if there is
    /// room. `false`: answer 503.
    pub fn start_request(&mut self, client: IpAddr) -> bool {
        let limits = &self.admission.limits;
        let mut st = self.admission.state.lock();
        if let SlotState::Pending(key) = self.state {
            st.remove_pending(key, self.ip, self.counted);
            self.state = SlotState::Done;
        }
        if st.busy.len() >= limits.max_busy {
            return false;
        }
        let charged = (!limits.trusted_proxies.contains(&client)).then_some(client);
        if let Some(ip) = charged {
            let p = st.per_ip.entry(ip).or_default();
            if p.busy >= limits.max_busy_per_ip {
                st.forget_if_unused(ip);
                return false;
            }
            p.busy += 1;
        }
        let key = st.next_key;
        st.next_key += 1;
        st.busy.insert(key, Arc::clone(&self.conn));
        self.state = SlotState::Busy(key, charged);
        true
    }

    /// The response went out and the connection stays open: it waits for its next request
    /// as a pending (idle) connection. `false`: no room; close the connection instead.
    pub fn wait_for_next(&mut self) -> bool {
        self.release();
        let limits = &self.admission.limits;
        let mut st = self.admission.state.lock();
        if st.closed
            || (self.counted && st.per_ip.get(&self.ip).is_some_and(|p| p.pending >= limits.max_pending_per_ip))
        {
            return false;
        }
        if st.pending.len() >= limits.max_pending
            && let Some(&oldest) = st.pending.keys().next()
        {
            st.evict(oldest);
        }
        let key = st.add_pending(&self.conn, self.ip, self.counted, true);
        self.state = SlotState::Pending(key);
        true
    }

    /// The head is complete and it is a WebSocket upgrade: the hub counts it from now on.
    pub fn leave(&mut self) {
        self.release();
    }

    fn release(&mut self) {
        let mut st = self.admission.state.lock();
        match std::mem::replace(&mut self.state, SlotState::Done) {
            SlotState::Pending(key) => {
                st.remove_pending(key, self.ip, self.counted);
            }
            SlotState::Busy(key, charged) => {
                st.busy.remove(&key);
                if let Some(ip) = charged
                    && let Some(p) = st.per_ip.get_mut(&ip)
                {
                    p.busy -= 1;
                    st.forget_if_unused(ip);
                }
            }
            SlotState::Done => {}
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests;
