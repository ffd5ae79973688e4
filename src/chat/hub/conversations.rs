//! The budget of direct-message conversations (part of the hub; see `mod.rs`).
//!
//! A conversation costs a little memory for as long as the server runs (its number in the
//! sequencer) and its history. Without authentication names are free, so one client
//! could rename itself and start conversations without end: their number is capped for
//! the server (`--max-conversations`), and each address may start at most 1 % of that, so
//! one address cannot take the budget from everyone else.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::Hub;

#[derive(Default)]
pub(super) struct Conversations {
    known: HashSet<String>,
    /// New conversations each address started (at most one entry per conversation).
    started: HashMap<IpAddr, usize>,
}

impl Hub {
    /// Whether a `dm` may go into conversation `key`, from a client at `from`: a known
    /// conversation always; a new one while the server's and the address's budgets last.
    pub fn admit_conversation(&self, key: &str, from: IpAddr) -> Result<(), String> {
        let max = self.limits.max_conversations;
        let per_address = (max / 100).max(1);
        let mut c = self.conversations.lock();
        if c.known.contains(key) {
            return Ok(());
        }
        if c.known.len() >= max {
            return Err(format!(
                "conversation limit reached: this server has {max} (--max-conversations); write to someone you have written to before"
            ));
        }
        let mine = c.started.get(&from).copied().unwrap_or(0);
        if mine >= per_address {
            return Err(format!("your address has started {per_address} conversations, the most one address may"));
        }
        c.started.insert(from, mine + 1);
        c.known.insert(key.to_string());
        Ok(())
    }

    /// Conversations already in the history (at start).
    pub(super) fn seed_conversations<'a>(&self, keys: impl Iterator<Item = &'a String>) {
        let mut c = self.conversations.lock();
        c.known.extend(keys.cloned());
    }
}
