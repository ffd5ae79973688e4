//! Postgres backend (`--database postgres://user@host:port/db`), for users who outgrow one
//! file or run several instances on one history. Same schema and migrations as SQLite.
//!
//! The `postgres` crate is synchronous to its callers (it drives `tokio-postgres` on a small
//! runtime of its own, inside each call), so the server's design stays blocking.

use parking_lot::Mutex;
use postgres::{Client, NoTls};

use super::moderation as sql;
use super::{AuditEntry, History, MIGRATIONS, Retention, Sanction, Store, StoreError, StoredMessage};

pub struct PgStore {
    url: String,
    writer: Mutex<Client>,
    readers: Mutex<Vec<Client>>,
    sync_commit: bool,
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StoreError(format!("postgres: {} ({})", db.message(), db.code().code())),
            None => StoreError(format!("postgres: {e}")),
        }
    }
}

impl PgStore {
    pub fn open(url: &str, sync_commit: bool) -> Result<PgStore, StoreError> {
        let mut client = Client::connect(url, NoTls)?;
        migrate(&mut client)?;
        let store =
            PgStore { url: url.to_string(), writer: Mutex::new(client), readers: Mutex::new(Vec::new()), sync_commit };
        store.configure_writer(&mut store.writer.lock())?;
        Ok(store)
    }

    /// `synchronous_commit = off` acknowledges before the WAL is flushed (a Postgres crash
    /// may lose the last commits; the database stays consistent).
    fn configure_writer(&self, client: &mut Client) -> Result<(), StoreError> {
        let setting = if self.sync_commit { "on" } else { "off" };
        client.batch_execute(&format!("SET synchronous_commit = {setting}"))?;
        Ok(())
    }

    fn with_reader<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut client = match self.readers.lock().pop() {
            Some(c) if !c.is_closed() => c,
            _ => Client::connect(&self.url, NoTls)?,
        };
        let result = f(&mut client);
        self.readers.lock().push(client);
        result
    }
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Serializes instances starting at once against the same database.
    tx.execute("SELECT pg_advisory_xact_lock(7364871)", &[])?;
    tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", &[])?;
    let current: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?.get(0);
    super::check_schema(current.into())?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(i as i32 + 1)])?;
    }
    tx.commit()?;
    Ok(())
}

fn row_to_message(r: &postgres::Row) -> StoredMessage {
    StoredMessage {
        room: r.get(0),
        seq: r.get::<_, i64>(1) as u64,
        id: r.get::<_, i64>(2) as u64,
        name: r.get(3),
        text: r.get(4),
        ts: r.get::<_, i64>(5) as u64,
        user: r.get(6),
    }
}

impl PgStore {
    /// One transaction of inserts, with `suffix` after each (a conflict clause, or nothing).
    fn insert(&self, batch: &[StoredMessage], suffix: &str) -> Result<(), StoreError> {
        let mut client = self.writer.lock();
        if client.is_closed() {
            *client = Client::connect(&self.url, NoTls)?;
            self.configure_writer(&mut client)?;
        }
        let mut tx = client.transaction()?;
        let insert = tx.prepare(&format!(
            "INSERT INTO messages (room, seq, client_id, name, text, ts, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7){suffix}"
        ))?;
        for m in batch {
            tx.execute(
                &insert,
                &[&m.room, &(m.seq as i64), &(m.id as i64), &m.name, &m.text, &(m.ts as i64), &m.user],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store for PgStore {
    fn append(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        self.insert(batch, "")
    }

    fn append_replicated(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        self.insert(batch, " ON CONFLICT (room, seq) DO NOTHING")
    }

    fn last_seqs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query("SELECT room, MAX(seq) FROM messages GROUP BY room", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn prune(&self, room: &str, last_seq: u64, retention: Retention, chunk: usize) -> Result<usize, StoreError> {
        let (keep_from, too_old) = retention.deletable(last_seq);
        self.with_reader(|c| {
            let n = c.execute(
                "DELETE FROM messages WHERE room = $1 AND seq IN (
                    SELECT seq FROM messages WHERE room = $1 AND (seq <= $2 OR ts < $3) ORDER BY seq LIMIT $4)",
                &[&room, &keep_from, &too_old, &(chunk as i64)],
            )?;
            Ok(n as usize)
        })
    }

    fn reserve_name(&self, key: &str, user: &str, name: &str) -> Result<String, StoreError> {
        self.with_reader(|c| {
            c.execute(
                "INSERT INTO reserved_names (name_key, user_id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&key, &user, &name],
            )?;
            Ok(c.query_one("SELECT user_id FROM reserved_names WHERE name_key = $1", &[&key])?.get(0))
        })
    }

    fn name_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query_opt("SELECT user_id FROM reserved_names WHERE name_key = $1", &[&key])?.map(|r| r.get(0)))
        })
    }

    fn reserved_names(&self, limit: usize) -> Result<Vec<(String, String, String)>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query("SELECT name_key, user_id, name FROM reserved_names LIMIT $1", &[&(limit as i64)])?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    fn tombstone(&self, room: &str, seq: u64) -> Result<bool, StoreError> {
        self.with_reader(|c| Ok(c.execute(sql::TOMBSTONE, &[&room, &(seq.min(i64::MAX as u64) as i64)])? > 0))
    }

    fn tombstone_user(&self, user: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_reader(|c| {
            let mut tx = c.transaction()?;
            let found = tx
                .query(sql::SELECT_OF_USER, &[&user])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            tx.execute(sql::TOMBSTONE_USER, &[&user])?;
            tx.commit()?;
            Ok(found)
        })
    }

    fn put_sanction(&self, s: &Sanction) -> Result<(), StoreError> {
        self.with_reader(|c| {
            c.execute(
                sql::INSERT_SANCTION,
                &[
                    &(s.id as i64),
                    &s.kind,
                    &s.target_kind,
                    &s.target,
                    &s.room,
                    &s.reason,
                    &s.by,
                    &i32::from(s.by_admin),
                    &(s.created as i64),
                    &(s.until as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn lift_sanction(&self, id: u64, at_ms: u64) -> Result<bool, StoreError> {
        self.with_reader(|c| Ok(c.execute(sql::LIFT, &[&(id as i64), &(at_ms as i64)])? > 0))
    }

    fn sanctions(&self, now_ms: u64) -> Result<Vec<Sanction>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query(sql::SELECT_SANCTIONS, &[&(now_ms as i64)])?
                .iter()
                .map(|r| Sanction {
                    id: r.get::<_, i64>(0) as u64,
                    kind: r.get(1),
                    target_kind: r.get(2),
                    target: r.get(3),
                    room: r.get(4),
                    reason: r.get(5),
                    by: r.get(6),
                    by_admin: r.get::<_, i32>(7) != 0,
                    created: r.get::<_, i64>(8) as u64,
                    until: r.get::<_, i64>(9) as u64,
                })
                .collect())
        })
    }

    fn put_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.with_reader(|c| {
            c.execute(
                sql::INSERT_AUDIT,
                &[&(e.id as i64), &(e.ts as i64), &e.actor, &e.action, &e.target, &e.room, &e.reason],
            )?;
            Ok(())
        })
    }

    fn audit(&self, before: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query(sql::SELECT_AUDIT, &[&(before.min(i64::MAX as u64) as i64), &(limit as i64)])?
                .iter()
                .map(|r| AuditEntry {
                    id: r.get::<_, i64>(0) as u64,
                    ts: r.get::<_, i64>(1) as u64,
                    actor: r.get(2),
                    action: r.get(3),
                    target: r.get(4),
                    room: r.get(5),
                    reason: r.get(6),
                })
                .collect())
        })
    }

    fn describe(&self) -> String {
        // Without the password, if the URL has one.
        match self.url.split_once('@') {
            Some((creds, rest)) => {
                format!("postgres {}@{rest}", creds.split(':').take(2).collect::<Vec<_>>().join(":"))
            }
            None => format!("postgres {}", self.url),
        }
    }
}

impl History for PgStore {
    fn range(&self, room: &str, after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.with_reader(|c| {
            Ok(c.query(
                "SELECT room, seq, client_id, name, text, ts, user_id FROM messages
                 WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&room, &(after as i64), &(limit as i64)],
            )?
            .iter()
            .map(row_to_message)
            .collect())
        })
    }

    fn before(&self, room: &str, before: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.with_reader(|c| {
            let mut messages: Vec<StoredMessage> = c
                .query(
                    "SELECT room, seq, client_id, name, text, ts, user_id FROM messages
                     WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                    &[&room, &(before.min(i64::MAX as u64) as i64), &(limit as i64)],
                )?
                .iter()
                .map(row_to_message)
                .collect();
            messages.reverse();
            Ok(messages)
        })
    }

    fn oldest_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
        self.with_reader(|c| {
            let v: Option<i64> = c.query_one("SELECT MIN(seq) FROM messages WHERE room = $1", &[&room])?.get(0);
            Ok(v.map(|v| v as u64))
        })
    }
}
