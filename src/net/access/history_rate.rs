//! One address's history reads share a byte budget (`--history-read-rate-per-ip`, MiB/s,
//! bursts of four times that), whichever entrance they come through.
//!
//! Why: reading history is the most expensive thing a client can ask for (a 1 MiB page is
//! about 10 ms of CPU here), and every other limit is on *requests*, not on their weight.
//! Without a budget, one address with 16 parallel loops of 1 MiB pages kept both cores busy
//! (measured: 182 % CPU, an innocent health check slowed from ~1 to 63 ms), and 64 sockets
//! resuming a big room from 0 in a loop would do the same.
//! - An HTTP page is refused with `429` while the address is in debt: a tiny_http worker
//!   must never wait for one client.
//! - A WebSocket resume reads through [`Paced`], which waits in the client's own thread
//!   (a resume must deliver everything, so it is slowed, not cut short).

use std::net::IpAddr;
use std::time::Duration;

use crate::net::shared::Shared;
use crate::store::{History, StoreError, StoredMessage};

const MIB: f64 = 1024.0 * 1024.0;

/// One address's history budget.
pub struct HistoryBudget<'a> {
    shared: &'a Shared,
    ip: IpAddr,
}

impl<'a> HistoryBudget<'a> {
    pub fn new(shared: &'a Shared, ip: IpAddr) -> HistoryBudget<'a> {
        HistoryBudget { shared, ip }
    }

    fn rate_and_burst(&self) -> (f64, f64) {
        let rate = self.shared.chat.config.history_read_rate_per_ip * MIB;
        (rate, rate * 4.0)
    }

    /// How long this address must wait before its next read (zero while it has budget).
    pub fn wait(&self) -> Duration {
        let (rate, burst) = self.rate_and_burst();
        self.shared.ips.history_wait(self.ip, rate, burst)
    }

    /// Charges what was read.
    pub fn charge(&self, messages: &[StoredMessage]) {
        let (rate, burst) = self.rate_and_burst();
        let bytes = messages.iter().map(StoredMessage::wire_bytes).sum();
        self.shared.ips.charge_history(self.ip, rate, burst, bytes);
    }
}

/// The history as one address's resume reads it: each page waits for the budget, then
/// is charged to it.
pub struct Paced<'a> {
    pub store: &'a dyn History,
    pub budget: HistoryBudget<'a>,
}

impl Paced<'_> {
    fn read(
        &self,
        read: impl FnOnce() -> Result<Vec<StoredMessage>, StoreError>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let wait = self.budget.wait();
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let page = read()?;
        self.budget.charge(&page);
        Ok(page)
    }
}

impl History for Paced<'_> {
    fn range(&self, room: &str, after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.read(|| self.store.range(room, after, limit))
    }
    fn before(&self, room: &str, before: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.read(|| self.store.before(room, before, limit))
    }
    fn oldest_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
        self.store.oldest_seq(room)
    }
}
