//! The heartbeat thread: pings every client each `ping_interval`, terminates the ones that
//! did not answer the previous ping, enforces the deadlines of server-initiated closes, and
//! rings the rooms' notice tick (queued `join`/`leave` notices go out together).
//!
//! A half-open TCP connection (peer vanished without FIN or RST) never makes `read()`
//! return, so without this the client's thread and socket would live forever. The thread
//! sleeps in `recv_timeout` between rounds: idle clients cost no CPU in between.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::chat::Chat;
use crate::chat::hub::{CloseCode, Deadline, PendingClose, TOKEN_EXPIRED, TOKEN_EXPIRED_CODE};
use crate::conn::Kind;

pub struct Heartbeat {
    pub thread: JoinHandle<()>,
    pub stop: Sender<()>,
}

/// Starts the thread. `closing` carries the close deadlines queued by the hub;
/// `over_budget` rings when all outboxes together hold more than `--max-queued-total`.
pub fn spawn(
    chat: Arc<Chat>,
    closing: Receiver<PendingClose>,
    over_budget: Receiver<()>,
) -> std::io::Result<Heartbeat> {
    let (stop, stop_rx) = crossbeam_channel::bounded(1);
    let thread = crate::conn::threads::spawn_named("heartbeat", 256 * 1024, move || {
        run(&chat, &closing, &over_budget, &stop_rx)
    })?;
    Ok(Heartbeat { thread, stop })
}

fn run(chat: &Chat, closing: &Receiver<PendingClose>, over_budget: &Receiver<()>, stop: &Receiver<()>) {
    let interval = chat.config.ping_interval;
    let ping = crate::conn::frames::ping_frame();
    let mut next_round = Instant::now() + interval;
    // Pending closes, in deadline order (every deadline is now + the same timeout, so the
    // channel already delivers them sorted).
    let mut pending: std::collections::VecDeque<PendingClose> = Default::default();
    let mut expiries = Expiries::default();
    // When the rooms' queued join/leave notices go out (see `chat/hub/notices.rs`).
    let mut notices_at: Option<Instant> = None;
    loop {
        let wake_at = [pending.front(), expiries.list.last()]
            .into_iter()
            .flatten()
            .map(|p| p.deadline)
            .chain(notices_at)
            .fold(next_round, Instant::min);
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(closing) -> msg => match msg {
                Ok(p) if p.why == Deadline::TokenExpiry => expiries.add(p),
                Ok(p) if p.why == Deadline::Notices => {
                    notices_at = Some(notices_at.map_or(p.deadline, |at| at.min(p.deadline)));
                }
                Ok(p) => pending.push_back(p),
                Err(_) => return,
            },
            recv(over_budget) -> _ => enforce_budget(chat),
            default(wake_at.saturating_duration_since(Instant::now())) => {}
        }

        let now = Instant::now();
        if notices_at.is_some_and(|at| at <= now) {
            notices_at = None;
            chat.hub.send_all_notices();
        }
        while pending.front().is_some_and(|p| p.deadline <= now) {
            let Some(p) = pending.pop_front() else { break };
            if let Some(conn) = p.conn.upgrade()
                && !conn.finished.load(Ordering::Acquire)
            {
                log::info!("client {}: no answer to our Close in time; cutting", conn.id);
                conn.terminate();
            }
        }

        while expiries.list.last().is_some_and(|p| p.deadline <= now) {
            let Some(p) = expiries.list.pop() else { break };
            if let Some(conn) = p.conn.upgrade()
                && !conn.finished.load(Ordering::Acquire)
            {
                log::info!("client {}: its token expired; closing {TOKEN_EXPIRED_CODE}", conn.id);
                chat.hub.close_client(&conn, CloseCode::from(TOKEN_EXPIRED_CODE), TOKEN_EXPIRED);
            }
        }

        if now >= next_round {
            next_round = now + interval;
            round(chat, &ping);
        }
    }
}

/// Credential expiries, latest first (each arrives at its own time: kept sorted).
struct Expiries {
    list: Vec<PendingClose>,
    /// The length after the last sweep (at least 1,024).
    swept_at: usize,
}

impl Default for Expiries {
    fn default() -> Self {
        Expiries { list: Vec::new(), swept_at: 1024 }
    }
}

impl Expiries {
    /// Connections that ended before their token did leave a dead entry; with long-lived
    /// tokens and many reconnections those would pile up until their expiry, so they are
    /// swept whenever the list has doubled since the last sweep.
    fn add(&mut self, p: PendingClose) {
        if self.list.len() >= self.swept_at * 2 {
            self.list.retain(|e| e.conn.strong_count() > 0);
            self.swept_at = self.list.len().max(1024);
        }
        let at = self.list.partition_point(|e| e.deadline > p.deadline);
        self.list.insert(at, p);
    }
}

/// All outboxes together hold more than `--max-queued-total`: close the clients holding the
/// most unsent bytes (1008, slow consumer), dropping what they had queued, until the total
/// is back under 90 % of the budget. The clients that read keep everything.
fn enforce_budget(chat: &Chat) {
    let budget = &chat.outboxes.budget;
    let target = budget.max / 10 * 9;
    if budget.total() <= budget.max {
        return;
    }
    let mut by_size: Vec<(usize, Arc<crate::conn::Conn>)> =
        chat.hub.snapshot().iter().map(|c| (c.queued_bytes(), Arc::clone(c))).collect();
    by_size.sort_unstable_by_key(|(queued, _)| std::cmp::Reverse(*queued));
    let mut closed = 0;
    for (queued, conn) in by_size {
        if budget.total() <= target || queued == 0 {
            break;
        }
        log::warn!(
            "client {} ({}): {queued} unsent bytes while all clients hold more than --max-queued-total; closing 1008",
            conn.id,
            conn.peer
        );
        // Closing as a slow consumer drops its backlog at once (see `Hub::close_client`).
        chat.hub.close_client(&conn, CloseCode::Policy, "slow consumer: server-wide outgoing budget exceeded");
        closed += 1;
    }
    log::warn!("outgoing budget: closed {closed} client(s); {} bytes unsent now", budget.total());
}

/// One heartbeat round. The snapshot is taken under the hub lock; pings are sent after it
/// is released (each `send` only queues and tries a non-blocking write).
fn round(chat: &Chat, ping: &bytes::Bytes) {
    for conn in chat.hub.snapshot().iter() {
        if conn.kind() == Kind::Handshaking {
            continue;
        }
        if conn.alive.swap(false, Ordering::AcqRel) {
            // A ping counts toward the byte cap like anything else; an overflowing client
            // is the hub's to close.
            chat.hub.send_or_close(conn, ping.clone());
        } else {
            log::info!("client {} ({}): no pong since the last ping; terminating", conn.id, conn.peer);
            conn.set_close_reason(crate::metrics::Disconnect::Heartbeat);
            chat.hub.remove(conn);
            conn.terminate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;
    use std::time::Duration;

    #[test]
    fn expiries_stay_sorted_and_dead_entries_do_not_pile_up() {
        let now = Instant::now();
        let at = |secs| PendingClose {
            conn: Weak::new(),
            deadline: now + Duration::from_secs(secs),
            why: Deadline::TokenExpiry,
        };
        let mut e = Expiries::default();
        for secs in [5, 1, 9, 3] {
            e.add(at(secs));
        }
        let order: Vec<u64> = e.list.iter().map(|p| (p.deadline - now).as_secs()).collect();
        assert_eq!(order, [9, 5, 3, 1], "latest first: the next due is at the end");
        // Every entry is dead (no connection holds it): however many are added, the list
        // never grows past twice the sweep threshold.
        for i in 0..100_000 {
            e.add(at(1_000_000 + i));
            assert!(e.list.len() <= 2 * 1024 + 1, "{} entries after {i}", e.list.len());
        }
    }
}
