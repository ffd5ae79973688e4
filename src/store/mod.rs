//! Durable chat history: the `Store` trait and its backends (SQLite, embedded by default;
//! Postgres with `--database postgres://…`).
//!
//! Only the sequencer thread writes (one `append` per batch: group commit); readers (resume,
//! the history API, the pruner) use their own connections, so a long read never delays a
//! commit.

use std::fmt;

use serde::Serialize;
use serde::ser::SerializeStruct;

pub use moderation::{AuditEntry, Sanction};

pub mod backup;
pub mod moderation;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
pub mod transfer;

/// One stored chat message. A deleted one (a tombstone) keeps its place, number, sender
/// and time, and its text is empty: a message sent never has empty text
/// (`protocol::validate_text`), so the empty text is the mark, in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub room: String,
    pub seq: u64,
    /// The sender's client id (unique per server run, not across restarts).
    pub id: u64,
    /// The sender's user id (a JWT `sub`, or a guest identity's id): who sent it, for good.
    /// Empty for messages stored before user ids existed (schema version 3).
    pub user: String,
    /// The sender's display name when it was sent (a label, not an identity).
    pub name: String,
    pub text: String,
    /// Unix time, ms.
    pub ts: u64,
}

impl StoredMessage {
    /// Whether this message was deleted (by its author, a moderator, or a purge).
    pub fn is_deleted(&self) -> bool {
        self.text.is_empty()
    }

    /// About what this message weighs as JSON on the wire (its text and name, plus the
    /// fixed fields): what history pages and read budgets count.
    pub fn wire_bytes(&self) -> usize {
        self.text.len() + self.name.len() + self.user.len() + 104
    }
}

/// As history pages and exports show a message: its fields, and `"deleted": true` for a
/// tombstone.
impl Serialize for StoredMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("StoredMessage", 8)?;
        m.serialize_field("room", &self.room)?;
        m.serialize_field("seq", &self.seq)?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("user", &self.user)?;
        m.serialize_field("name", &self.name)?;
        m.serialize_field("text", &self.text)?;
        m.serialize_field("ts", &self.ts)?;
        if self.is_deleted() {
            m.serialize_field("deleted", &true)?;
        } else {
            m.skip_field("deleted")?;
        }
        m.end()
    }
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(format!("sqlite: {e}"))
    }
}

/// Retention: what the pruner may delete.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Keep at most this many messages per room.
    pub max_messages: u64,
    /// Delete messages older than this many ms (None: no age limit).
    pub max_age_ms: Option<u64>,
}

impl Retention {
    /// What `--history-limit` and `--history-max-age-secs` ask for.
    pub fn of(config: &crate::config::Config) -> Retention {
        Retention {
            max_messages: config.history_limit,
            max_age_ms: config.history_max_age.map(|d| d.as_millis() as u64),
        }
    }
}

impl Retention {
    /// For a room whose last seq is `last_seq`: messages with `seq <= .0` or `ts < .1` may
    /// go (as SQL integers; `.1` is -1 without an age limit, which no `ts` is below).
    pub fn deletable(&self, last_seq: u64) -> (i64, i64) {
        let keep_from = last_seq.saturating_sub(self.max_messages) as i64;
        let too_old = self.max_age_ms.map_or(-1, |age| crate::clock::now_ms().saturating_sub(age) as i64);
        (keep_from, too_old)
    }
}

/// Reading a room's history: all that a replay needs (so a reader that is paced, like one
/// address's resumes, wraps only this).
pub trait History: Send + Sync {
    /// Messages of `room` with `seq > after`, oldest first, at most `limit`.
    fn range(&self, room: &str, after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError>;
    /// The latest `limit` messages of `room` with `seq < before`, oldest first (scrolling
    /// back through a room's history, a page at a time).
    fn before(&self, room: &str, before: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError>;
    /// The lowest `seq` still kept for `room`.
    fn oldest_seq(&self, room: &str) -> Result<Option<u64>, StoreError>;
}

/// The history store: reads, and the writes of the sequencer, the backplane and the pruner.
pub trait Store: History {
    /// Appends a batch in one transaction: all of it is durable when this returns Ok, none
    /// of it if it returns Err.
    fn append(&self, batch: &[StoredMessage]) -> Result<(), StoreError>;
    /// Like `append`, but a message whose `(room, seq)` is already stored is skipped: with
    /// the Redis backplane every instance stores what it reads from the shared log, and
    /// instances sharing one Postgres database store the same messages.
    fn append_replicated(&self, batch: &[StoredMessage]) -> Result<(), StoreError>;
    /// The highest stored `seq` of every room (to continue numbering after a restart).
    fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Deletes up to `chunk` messages of `room` that retention no longer covers, given the
    /// room's last seq. Returns how many were deleted (call again while it returns `chunk`).
    fn prune(&self, room: &str, last_seq: u64, retention: Retention, chunk: usize) -> Result<usize, StoreError>;
    /// Background upkeep, called about once a second off the message path (SQLite: a
    /// passive WAL checkpoint).
    fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Reserves the display name whose folded form is `key` for `user` (a JWT user), for
    /// good, unless another user has it. Returns the user that holds it now (`user`, if
    /// the reservation is new or was theirs already).
    fn reserve_name(&self, key: &str, user: &str, name: &str) -> Result<String, StoreError>;
    /// The user a display name (folded: `key`) is reserved for, if any.
    fn name_owner(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Up to `limit` reservations, as (key, user, name).
    fn reserved_names(&self, limit: usize) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Replaces the text of message `seq` of `room` with the tombstone (empty text).
    /// Returns whether it was there and not deleted already.
    fn tombstone(&self, room: &str, seq: u64) -> Result<bool, StoreError>;
    /// Tombstones every message of `user`, in every room and conversation (erasure);
    /// returns the (room, seq) of each.
    fn tombstone_user(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError>;
    /// Stores a ban or mute (a copy from another instance, already here, is skipped).
    fn put_sanction(&self, sanction: &Sanction) -> Result<(), StoreError>;
    /// Lifts sanction `id` at `at_ms`; whether it was in force.
    fn lift_sanction(&self, id: u64, at_ms: u64) -> Result<bool, StoreError>;
    /// Sanctions not lifted and not over at `now_ms`.
    fn sanctions(&self, now_ms: u64) -> Result<Vec<Sanction>, StoreError>;
    /// Records a moderation action (a copy already here is skipped).
    fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Up to `limit` audit entries with `id < before`, newest first.
    fn audit(&self, before: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Human-readable backend name for logs.
    fn describe(&self) -> String;
}

/// Versioned schema steps, applied in order by each backend; a database records the
/// highest version applied in `schema_version`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the message log, one row per message, keyed by (room, seq).
    "CREATE TABLE messages (
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        client_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        text TEXT NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (room, seq)
    )",
    // 2: age-based retention scans by time.
    "CREATE INDEX messages_ts ON messages (ts)",
    // 3: who sent each message, by user id (earlier rows: '', unknown).
    "ALTER TABLE messages ADD COLUMN user_id TEXT NOT NULL DEFAULT ''",
    // 4: display names that belong to a JWT user for good (see `chat/names.rs`), by their
    // folded form.
    "CREATE TABLE reserved_names (
        name_key TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL
    )",
    // 5: bans and mutes (see `store/moderation.rs`); ids are made by the server (unique
    // across a cluster), so both backends take the same statement.
    "CREATE TABLE sanctions (
        id BIGINT PRIMARY KEY,
        kind TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target TEXT NOT NULL,
        room TEXT NOT NULL,
        reason TEXT NOT NULL,
        by_actor TEXT NOT NULL,
        by_admin INTEGER NOT NULL,
        created_ms BIGINT NOT NULL,
        until_ms BIGINT NOT NULL,
        lifted_ms BIGINT NOT NULL DEFAULT 0
    )",
    // 6: the moderation audit log.
    "CREATE TABLE audit (
        id BIGINT PRIMARY KEY,
        ts BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        room TEXT NOT NULL,
        reason TEXT NOT NULL
    )",
];

/// How an error about a history newer than this threadchat begins (the server exits 2).
pub const NEWER_SCHEMA: &str = "the history was written by a newer threadchat";

/// Refuses a history whose schema is newer than this build's `MIGRATIONS`: opening it could
/// damage what a newer version wrote. Called before any migration runs.
pub fn check_schema(current: i64) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError(format!(
            "{NEWER_SCHEMA} (schema version {current}; this one knows up to {known}): run that version, or restore a backup this version made; nothing was changed"
        )));
    }
    Ok(())
}

/// Opens the configured store: Postgres for a `postgres://` URL, else SQLite in `data_dir`.
/// `sync_commit`: flush every commit to disk (see `--sync-commit`).
pub fn open(
    database: Option<&str>,
    data_dir: &std::path::Path,
    sync_commit: bool,
) -> Result<Box<dyn Store>, StoreError> {
    match database {
        #[cfg(feature = "postgres")]
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Box::new(postgres::PgStore::open(url, sync_commit)?))
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => Err(StoreError(crate::config::missing_feature("--database", "postgres"))),
        #[cfg(feature = "postgres")]
        Some(other) => Err(StoreError(format!("--database must be a postgres:// URL, got {other:?}"))),
        None => Ok(Box::new(sqlite::SqliteStore::open(data_dir, sync_commit)?)),
    }
}
