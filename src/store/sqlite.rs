//! SQLite backend: one file, `history.db`, in `--data-dir`, created on first run.
//!
//! WAL mode lets readers run while the sequencer commits. With `--sync-commit on` (the
//! default) `synchronous = FULL` makes every commit durable against power loss, not just a
//! crash; group commit (one transaction per batch) is what keeps that affordable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditEntry, History, MIGRATIONS, Retention, Sanction, Store, StoreError, StoredMessage};

pub struct SqliteStore {
    path: PathBuf,
    /// The one connection that writes: the sequencer's (or the backplane reader's) commits
    /// and the pruner's deletes take turns on it.
    writer: Mutex<Connection>,
    /// The writer's `synchronous` setting (`--sync-commit`).
    synchronous: &'static str,
    /// Idle reader connections, opened on demand.
    readers: Mutex<Vec<Connection>>,
    /// A shared lock on `DATA_DIR/history.lock` for as long as the store is open: `threadchat
    /// restore` and `import` take it exclusively, so they never swap a history out from
    /// under a running server.
    _in_use: std::fs::File,
}

/// Takes the data directory's lock: shared by running servers, exclusive for a tool that
/// replaces the history. `Err` names who holds it.
pub fn lock_data_dir(data_dir: &Path, exclusive: bool) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join("history.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    let how = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
    // SAFETY: flock on a descriptor this function owns; released when `file` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), how) } != 0 {
        return Err(StoreError(if exclusive {
            format!("a server is running on {} (stop it first)", data_dir.display())
        } else {
            format!("{} is being restored or imported into; start the server after", data_dir.display())
        }));
    }
    Ok(file)
}

impl SqliteStore {
    pub fn open(data_dir: &Path, sync_commit: bool) -> Result<SqliteStore, StoreError> {
        Self::open_locked(data_dir, sync_commit, false)
    }

    /// `exclusive`: no server may run on `data_dir` meanwhile (`threadchat import`).
    pub fn open_locked(data_dir: &Path, sync_commit: bool, exclusive: bool) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError(format!("cannot create --data-dir {}: {e}", data_dir.display())))?;
        let in_use = lock_data_dir(data_dir, exclusive)?;
        let path = data_dir.join("history.db");
        let mut conn = connect(&path)?;
        // FULL: the WAL is fsynced at every commit. NORMAL: only at checkpoints (a crash of
        // the process loses nothing; a crash of the machine may lose the last commits).
        let synchronous = if sync_commit { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", synchronous)?;
        // SQLite checkpoints the WAL into the database inside whichever commit crosses 1000
        // pages — a stall of tens of milliseconds on the message path. The sequencer's
        // connection never does; the pruner thread runs passive checkpoints instead.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(conn),
            synchronous,
            readers: Mutex::new(Vec::new()),
            _in_use: in_use,
        })
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => connect(&self.path)?,
        };
        let result = f(&conn);
        self.readers.lock().push(conn);
        result
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // Only one connection writes, but another process (a second instance on the same
    // --data-dir, or sqlite3 at a prompt) might: wait for it rather than fail at once.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", [])?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    super::check_schema(current)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute(sql, [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [i as i64 + 1])?;
    }
    tx.commit()?;
    Ok(())
}

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        room: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        id: r.get::<_, i64>(2)? as u64,
        name: r.get(3)?,
        text: r.get(4)?,
        ts: r.get::<_, i64>(5)? as u64,
        user: r.get(6)?,
    })
}

impl SqliteStore {
    /// One transaction of `verb INTO messages …` (`INSERT`, or `INSERT OR IGNORE`).
    fn insert(&self, batch: &[StoredMessage], verb: &str) -> Result<(), StoreError> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        {
            let sql = format!(
                "{verb} INTO messages (room, seq, client_id, name, text, ts, user_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            );
            let mut insert = tx.prepare_cached(&sql)?;
            for m in batch {
                insert.execute(params![m.room, m.seq as i64, m.id as i64, m.name, m.text, m.ts as i64, m.user])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn append(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        self.insert(batch, "INSERT")
    }

    fn append_replicated(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        self.insert(batch, "INSERT OR IGNORE")
    }

    fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare("SELECT room, MAX(seq) FROM messages GROUP BY room")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn prune(&self, room: &str, last_seq: u64, retention: Retention, chunk: usize) -> Result<usize, StoreError> {
        let (keep_from, too_old) = retention.deletable(last_seq);
        // On the writer's connection, under its mutex, one chunk at a time, and handed back
        // fairly: the message path then waits at most one chunk, woken the moment it is
        // done. (From a connection of its own, the pruner made the writer meet SQLITE_BUSY,
        // whose handler sleeps in growing steps: at 20,000 messages/s that alone put the
        // p99 above 100 ms.)
        let conn = self.writer.lock();
        // Not fsynced: a delete lost in a crash is simply done again, and the next message
        // commit's fsync of the WAL covers this one's frames too. Only messages pay an fsync.
        conn.pragma_update(None, "synchronous", "OFF")?;
        let deleted = conn
            .prepare_cached(
                "DELETE FROM messages WHERE room = ?1 AND seq IN (
                SELECT seq FROM messages WHERE room = ?1 AND (seq <= ?2 OR ts < ?3) ORDER BY seq LIMIT ?4)",
            )?
            .execute(params![room, keep_from, too_old, chunk as i64]);
        let restored = conn.pragma_update(None, "synchronous", self.synchronous);
        parking_lot::MutexGuard::unlock_fair(conn);
        restored?;
        Ok(deleted?)
    }

    fn maintain(&self) -> Result<(), StoreError> {
        // PASSIVE: copies what it can without waiting for (or blocking) the writer.
        self.with_reader(|c| {
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn reserve_name(&self, key: &str, user: &str, name: &str) -> Result<String, StoreError> {
        // On the writer's connection: a reservation is a write, rare (a JWT sign-in), and
        // must not meet the writer's lock as SQLITE_BUSY.
        let conn = self.writer.lock();
        conn.prepare_cached("INSERT OR IGNORE INTO reserved_names (name_key, user_id, name) VALUES (?1, ?2, ?3)")?
            .execute(params![key, user, name])?;
        Ok(conn.query_row("SELECT user_id FROM reserved_names WHERE name_key = ?1", [key], |r| r.get(0))?)
    }

    fn name_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query_row("SELECT user_id FROM reserved_names WHERE name_key = ?1", [key], |r| r.get(0)).optional()?)
        })
    }

    fn reserved_names(&self, limit: usize) -> Result<Vec<(String, String, String)>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare("SELECT name_key, user_id, name FROM reserved_names LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn tombstone(&self, room: &str, seq: u64) -> Result<bool, StoreError> {
        let conn = self.writer.lock();
        let n = conn
            .prepare_cached(super::moderation::TOMBSTONE)?
            .execute(params![room, seq.min(i64::MAX as u64) as i64])?;
        Ok(n > 0)
    }

    fn tombstone_user(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        let found: Vec<(String, u64)> = {
            let mut stmt = tx.prepare(super::moderation::SELECT_OF_USER)?;
            let rows = stmt.query_map([user], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(super::moderation::TOMBSTONE_USER, [user])?;
        tx.commit()?;
        Ok(found)
    }

    fn put_sanction(&self, s: &Sanction) -> Result<(), StoreError> {
        self.writer.lock().prepare_cached(super::moderation::INSERT_SANCTION)?.execute(params![
            s.id as i64,
            s.kind,
            s.target_kind,
            s.target,
            s.room,
            s.reason,
            s.by,
            s.by_admin,
            s.created as i64,
            s.until as i64
        ])?;
        Ok(())
    }

    fn lift_sanction(&self, id: u64, at_ms: u64) -> Result<bool, StoreError> {
        let n =
            self.writer.lock().prepare_cached(super::moderation::LIFT)?.execute(params![id as i64, at_ms as i64])?;
        Ok(n > 0)
    }

    fn sanctions(&self, now_ms: u64) -> Result<Vec<Sanction>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare(super::moderation::SELECT_SANCTIONS)?;
            let rows = stmt.query_map([now_ms as i64], |r| {
                Ok(Sanction {
                    id: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    target_kind: r.get(2)?,
                    target: r.get(3)?,
                    room: r.get(4)?,
                    reason: r.get(5)?,
                    by: r.get(6)?,
                    by_admin: r.get(7)?,
                    created: r.get::<_, i64>(8)? as u64,
                    until: r.get::<_, i64>(9)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn put_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.writer.lock().prepare_cached(super::moderation::INSERT_AUDIT)?.execute(params![
            e.id as i64,
            e.ts as i64,
            e.actor,
            e.action,
            e.target,
            e.room,
            e.reason
        ])?;
        Ok(())
    }

    fn audit(&self, before: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare(super::moderation::SELECT_AUDIT)?;
            let rows = stmt.query_map(params![before.min(i64::MAX as u64) as i64, limit as i64], |r| {
                Ok(AuditEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    ts: r.get::<_, i64>(1)? as u64,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    room: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

impl History for SqliteStore {
    fn range(&self, room: &str, after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT room, seq, client_id, name, text, ts, user_id FROM messages
                 WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![room, after as i64, limit as i64], row_to_message)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn before(&self, room: &str, before: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT room, seq, client_id, name, text, ts, user_id FROM messages
                 WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows =
                stmt.query_map(params![room, before.min(i64::MAX as u64) as i64, limit as i64], row_to_message)?;
            let mut messages = rows.collect::<Result<Vec<_>, _>>()?;
            messages.reverse();
            Ok(messages)
        })
    }

    fn oldest_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
        self.with_reader(|c| {
            let v: Option<i64> = c
                .query_row("SELECT MIN(seq) FROM messages WHERE room = ?1", [room], |r| r.get(0))
                .optional()?
                .flatten();
            Ok(v.map(|v| v as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, seq: u64) -> StoredMessage {
        StoredMessage {
            room: room.into(),
            seq,
            id: 1,
            user: "u".into(),
            name: "n".into(),
            text: format!("t{seq}"),
            ts: seq * 1000,
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("threadchat-sqlite-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn append_range_prune_and_reopen() {
        let dir = temp_dir("basic");
        let store = SqliteStore::open(&dir, true).unwrap();
        store.append(&(1..=10).map(|s| msg("a", s)).collect::<Vec<_>>()).unwrap();
        store.append(&[msg("b", 1)]).unwrap();
        assert_eq!(store.range("a", 7, 100).unwrap().iter().map(|m| m.seq).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert_eq!(store.range("a", 0, 2).unwrap().len(), 2);
        let retention = Retention { max_messages: 4, max_age_ms: None };
        assert_eq!(store.prune("a", 10, retention, 3).unwrap(), 3);
        assert_eq!(store.prune("a", 10, retention, 3).unwrap(), 3);
        assert_eq!(store.prune("a", 10, retention, 3).unwrap(), 0);
        assert_eq!(store.oldest_seq("a").unwrap(), Some(7));
        drop(store);
        let store = SqliteStore::open(&dir, true).unwrap(); // migrations are not re-applied
        let mut last = store.last_seqs().unwrap();
        last.sort();
        assert_eq!(last, vec![("a".into(), 10), ("b".into(), 1)]);
        // A duplicate (room, seq) fails the whole batch.
        assert!(store.append(&[msg("b", 2), msg("b", 1)]).is_err());
        assert_eq!(store.range("b", 0, 10).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
