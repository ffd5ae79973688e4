//! The server-wide budget of unsent bytes, which every outbox counts against.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The server-wide budget of unsent bytes (`--max-queued-total`): every outbox adds what it
/// queues and subtracts what it sends, drops or discards. The per-connection cap bounds one
/// client; this bounds all of them together, so ten thousand clients each just under their
/// own cap cannot take ten gigabytes. Whoever pushes the total over the budget only rings
/// the bell (`over`); the heartbeat thread then closes the clients holding the most.
pub struct QueueBudget {
    total: AtomicUsize,
    pub max: usize,
    /// A bounded(1) doorbell to the heartbeat thread; a full channel means it rang already.
    over: crossbeam_channel::Sender<()>,
}

impl QueueBudget {
    pub fn new(max: usize, over: crossbeam_channel::Sender<()>) -> QueueBudget {
        QueueBudget { total: AtomicUsize::new(0), max, over }
    }

    /// Unsent bytes in all outboxes.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: usize) {
        if self.total.fetch_add(n, Ordering::Relaxed) + n > self.max {
            let _ = self.over.try_send(());
        }
    }

    pub(crate) fn sub(&self, n: usize) {
        self.total.fetch_sub(n, Ordering::Relaxed);
    }

    /// While over the budget, a connection already holding this much takes no more frames
    /// (it is closed as a slow consumer), so the total cannot run far past the budget during
    /// a broadcast, before the heartbeat thread gets to close the biggest queues.
    pub(crate) fn refuses(&self, queued: usize) -> bool {
        queued > OVER_BUDGET_GRACE && self.total() > self.max
    }
}

/// See [`QueueBudget::refuses`]: a reading client's queue stays far below this.
const OVER_BUDGET_GRACE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bell_rings_only_past_the_budget_and_refusals_start_there() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let b = QueueBudget::new(1000, tx);
        b.add(600);
        b.add(400);
        assert_eq!(b.total(), 1000);
        assert!(rx.try_recv().is_err(), "at the budget, not past it: no ring");
        assert!(!b.refuses(OVER_BUDGET_GRACE + 1), "nobody is refused under the budget");
        b.add(1);
        assert!(rx.try_recv().is_ok(), "one byte past it: the heartbeat is rung");
        assert!(b.refuses(OVER_BUDGET_GRACE + 1), "over it, a big queue takes no more");
        assert!(!b.refuses(OVER_BUDGET_GRACE), "a small queue still does");
        b.sub(1);
        assert_eq!(b.total(), 1000);
        assert!(!b.refuses(OVER_BUDGET_GRACE + 1), "back at the budget: no refusals");
    }
}
