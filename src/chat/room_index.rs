//! The room listing that `/api/rooms` and `/metrics` read, kept beside the hub rather than
//! computed from it: walking every room under the hub's lock would make every chat message
//! wait for the listing (with 200,000 rooms, half a second). Each room publishes its figures
//! in atomics that the hub updates as it changes them (no lock on the message path); the
//! index's own lock is taken only when a room appears or goes, and by readers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

/// One room's published figures. Written by the hub (under its lock), read by anyone.
#[derive(Default, Debug)]
pub struct RoomStats {
    /// Distinct member users on this instance.
    pub users: AtomicUsize,
    /// Names on other instances (`--redis`) that are not here, as of the last presence sync.
    pub remote_only: AtomicUsize,
    /// The last message's `seq` (0: none).
    pub last_seq: AtomicU64,
}

/// A room as `GET /api/rooms` lists it.
#[derive(Debug, serde::Serialize)]
pub struct RoomSummary {
    pub room: String,
    pub members: usize,
    pub last_seq: u64,
}

/// Every room the hub has, by name. Lock order: after the hub's (a leaf).
#[derive(Default)]
pub struct RoomIndex {
    rooms: Mutex<BTreeMap<String, Arc<RoomStats>>>,
}

impl RoomIndex {
    pub fn insert(&self, room: &str, stats: &Arc<RoomStats>) {
        self.rooms.lock().insert(room.to_string(), Arc::clone(stats));
    }

    pub fn remove(&self, room: &str) {
        self.rooms.lock().remove(room);
    }

    /// Rooms with members (anywhere) or history, sorted by name.
    pub fn list(&self) -> Vec<RoomSummary> {
        self.rooms
            .lock()
            .iter()
            .filter_map(|(room, s)| {
                let members = s.users.load(Relaxed) + s.remote_only.load(Relaxed);
                let last_seq = s.last_seq.load(Relaxed);
                (members > 0 || last_seq > 0).then(|| RoomSummary { room: room.clone(), members, last_seq })
            })
            .collect()
    }

    /// (room, members) for rooms with members, for `/metrics`.
    pub fn occupied(&self) -> Vec<(String, usize)> {
        self.list().into_iter().filter(|r| r.members > 0).map(|r| (r.room, r.members)).collect()
    }
}
