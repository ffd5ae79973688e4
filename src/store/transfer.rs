//! Moving a history out and in as JSON lines, one message each (`threadchat export`,
//! `threadchat import`): for handing a user their messages, for a move between SQLite and
//! Postgres, for anything that reads text. Both go through the `Store` trait, so they
//! work the same on either backend.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{Store, StoredMessage};

/// One exported message (the stored fields, as `GET /api/rooms/{room}/messages` shows them).
#[derive(Serialize, Deserialize)]
struct Line {
    room: String,
    seq: u64,
    /// The sender's user id ("" for messages stored before user ids).
    #[serde(default)]
    user: String,
    name: String,
    text: String,
    ts: u64,
    /// The sending connection's id.
    #[serde(default)]
    id: u64,
}

/// What to export: every message, or those of one room, one user, or since a time.
#[derive(Default)]
pub struct Filter {
    pub room: Option<String>,
    pub user: Option<String>,
    /// Unix ms: messages at or after it.
    pub since_ms: Option<u64>,
}

/// `threadchat export`: the history of `data_dir` (or `--database`), as JSON lines on `out`.
/// Reading only: a server may run on it meanwhile.
pub fn export_from(
    database: Option<&str>,
    data_dir: &std::path::Path,
    filter: &Filter,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let store = super::open(database, data_dir, false).map_err(|e| e.to_string())?;
    export(&*store, filter, out)
}

/// `threadchat import`: JSON lines into the empty history of `data_dir` (or `--database`);
/// with SQLite, refused while a server runs on `data_dir`.
pub fn import_into(database: Option<&str>, data_dir: &std::path::Path, input: &mut dyn BufRead) -> Result<u64, String> {
    let store: Box<dyn Store> = match database {
        None => Box::new(super::sqlite::SqliteStore::open_locked(data_dir, true, true).map_err(|e| e.to_string())?),
        Some(_) => super::open(database, data_dir, true).map_err(|e| e.to_string())?,
    };
    import(&*store, input)
}

/// Messages read per query.
const PAGE: usize = 1000;

/// Writes every message `filter` selects, room by room in `seq` order. Returns how many.
fn export(store: &dyn Store, filter: &Filter, out: &mut dyn Write) -> Result<u64, String> {
    let mut rooms = store.last_seqs().map_err(|e| e.to_string())?;
    rooms.sort();
    let mut written = 0;
    for (room, _) in rooms.iter().filter(|(r, _)| filter.room.as_ref().is_none_or(|want| want == r)) {
        let mut after = 0;
        loop {
            let page = store.range(room, after, PAGE).map_err(|e| e.to_string())?;
            for m in &page {
                if filter.user.as_ref().is_some_and(|u| *u != m.user) || filter.since_ms.is_some_and(|t| m.ts < t) {
                    continue;
                }
                let line = Line {
                    room: m.room.clone(),
                    seq: m.seq,
                    user: m.user.clone(),
                    name: m.name.clone(),
                    text: m.text.clone(),
                    ts: m.ts,
                    id: m.id,
                };
                serde_json::to_writer(&mut *out, &line).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
                written += 1;
            }
            match page.last() {
                Some(m) if page.len() == PAGE => after = m.seq,
                _ => break,
            }
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(written)
}

/// Reads JSON lines into `store`, which must hold no messages: each line checked (a room
/// name or a conversation key, a `seq` above the room's previous one), committed a
/// thousand at a time. Returns how many; on a bad line, says which (nothing after it is
/// imported; what came before is).
fn import(store: &dyn Store, input: &mut dyn BufRead) -> Result<u64, String> {
    if !store.last_seqs().map_err(|e| e.to_string())?.is_empty() {
        return Err("the history holds messages already; import needs an empty one".into());
    }
    let mut batch: Vec<StoredMessage> = Vec::with_capacity(PAGE);
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    let mut imported = 0;
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !is_history_key(&l.room) || l.seq == 0 || last.get(&l.room).is_some_and(|&s| l.seq <= s) {
            return Err(format!("line {}: bad room {:?} or seq {} (each room's seqs must grow)", n + 1, l.room, l.seq));
        }
        last.insert(l.room.clone(), l.seq);
        batch.push(StoredMessage {
            room: l.room,
            seq: l.seq,
            id: l.id,
            user: l.user,
            name: l.name,
            text: l.text,
            ts: l.ts,
        });
        if batch.len() == PAGE {
            store.append(&batch).map_err(|e| e.to_string())?;
            imported += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append(&batch).map_err(|e| e.to_string())?;
        imported += batch.len() as u64;
    }
    Ok(imported)
}

/// A room name (`chat::protocol::validate_room`'s rule: 1–64 of `a-z 0-9 _ -`; the store
/// sits below the chat and cannot ask it) or a conversation's key (`dm:`…).
fn is_history_key(key: &str) -> bool {
    (key.starts_with("dm:") && key.len() <= 512)
        || ((1..=64).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
}
