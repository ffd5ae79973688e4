//! What moderation stores (the rules are the chat's, `chat/moderation/`): bans and mutes
//! ("sanctions", one table: they differ only in what they refuse) and the audit log.
//!
//! Ids are made here, not by the database: `ms << 20 | 20 random bits`. They grow with
//! time (the audit log pages by id), and two instances of a cluster, each writing its own
//! SQLite, store one ban under one id (it travels the backplane with its id), so `DELETE
//! /api/admin/bans/{id}` means the same ban everywhere.

use serde::{Deserialize, Serialize};

/// A ban (refused at the door) or a mute (may not speak), of a user or an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    /// Serialized as a string: JavaScript's numbers lose precision past 2^53.
    #[serde(with = "id_string")]
    pub id: u64,
    /// `"ban"` or `"mute"`.
    pub kind: String,
    /// `"user"` (a user id) or `"address"` (an IPv4 address, or an IPv6 /64 as `a:b:c:d::`).
    pub target_kind: String,
    pub target: String,
    /// A mute's room; `""`: everywhere (bans are always everywhere).
    pub room: String,
    pub reason: String,
    /// Who: a user id, or `"admin token"`.
    pub by: String,
    /// Whether an admin gave it: a moderator's sanction never holds against an admin.
    pub by_admin: bool,
    /// Unix ms.
    pub created: u64,
    /// Unix ms when it ends; 0: never.
    pub until: u64,
}

impl Sanction {
    pub fn in_force(&self, now_ms: u64) -> bool {
        self.until == 0 || self.until > now_ms
    }
}

/// One moderation action, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "id_string")]
    pub id: u64,
    /// Unix ms.
    pub ts: u64,
    /// A user id, or `"admin token"`.
    pub actor: String,
    /// `kick`, `ban`, `unban`, `mute`, `unmute`, `delete`, `announce`, `purge`.
    pub action: String,
    /// A user id, an address, `ROOM#SEQ`, or a sanction id.
    pub target: String,
    pub room: String,
    pub reason: String,
}

/// A new id: the time in ms, then 20 random bits (see the module's doc).
/// Never the same twice in one process (above the last one given, if the clock or the
/// random bits would repeat it: a burst within one millisecond); across instances the
/// random bits keep two ids of one millisecond apart.
pub fn new_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    // Uniqueness, not secrecy, is what counts: without randomness the clock still orders.
    let random = crate::random::u64().unwrap_or(0) & 0xF_FFFF;
    let candidate = (crate::clock::now_ms() << 20) | random;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Ids as JSON strings (both ways).
mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Statements both backends take as they are (`$N` parameters, which SQLite numbers in
/// order of appearance; `ON CONFLICT DO NOTHING`, SQLite's since 3.24).
pub(super) const INSERT_SANCTION: &str = "INSERT INTO sanctions
    (id, kind, target_kind, target, room, reason, by_actor, by_admin, created_ms, until_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING";
pub(super) const SELECT_SANCTIONS: &str =
    "SELECT id, kind, target_kind, target, room, reason, by_actor, by_admin, created_ms, until_ms
     FROM sanctions WHERE lifted_ms = 0 AND (until_ms = 0 OR until_ms > $1) ORDER BY id";
pub(super) const INSERT_AUDIT: &str = "INSERT INTO audit (id, ts, actor, action, target, room, reason)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
pub(super) const SELECT_AUDIT: &str = "SELECT id, ts, actor, action, target, room, reason FROM audit
    WHERE id < $1 ORDER BY id DESC LIMIT $2";
pub(super) const TOMBSTONE: &str = "UPDATE messages SET text = '' WHERE room = $1 AND seq = $2 AND text <> ''";
pub(super) const SELECT_OF_USER: &str = "SELECT room, seq FROM messages WHERE user_id = $1 AND text <> ''";
pub(super) const TOMBSTONE_USER: &str = "UPDATE messages SET text = '' WHERE user_id = $1 AND text <> ''";
pub(super) const LIFT: &str = "UPDATE sanctions SET lifted_ms = $2 WHERE id = $1 AND lifted_ms = 0";
