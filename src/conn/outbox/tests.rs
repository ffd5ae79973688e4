//! The outbox's bookkeeping, on a real socket whose peer does not read: the per-client cap
//! to the byte, the Close rule, shedding, and the server-wide budget following every byte.

use super::*;
use crate::conn::unsent::QueueBudget;
use std::net::{TcpListener, TcpStream};

/// A connection with `max_queued` as its cap, the budget it reports to, and the client end
/// of its socket (kept open, never read).
fn conn(max_queued: usize) -> (Conn, Arc<QueueBudget>, TcpStream) {
    let (flusher, _thread) = Flusher::start().unwrap();
    let (over, _) = crossbeam_channel::unbounded();
    let budget = Arc::new(QueueBudget::new(1 << 30, over));
    let outboxes = Outboxes { max_queued, budget: Arc::clone(&budget), flusher, metrics: Default::default() };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    (Conn::new(1, peer, server, None, &outboxes), budget, client)
}

fn bytes(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

#[test]
fn the_cap_admits_exactly_max_queued_bytes_and_the_budget_sees_each_one() {
    let (c, budget, _client) = conn(100);
    assert_eq!(c.push(bytes(60)), Push::Queued);
    assert_eq!(c.push(bytes(40)), Push::Queued, "up to the cap exactly");
    assert_eq!(c.push(bytes(1)), Push::Overflow);
    assert_eq!((c.queued_bytes(), budget.total()), (100, 100));
    // Pongs count against the same cap; only a Close may go past it.
    assert_eq!(c.push_control(bytes(1), false), Push::Overflow);
    assert!(c.push_close(CloseCode::Policy, "full"));
    assert!(c.close_queued());
    let with_close = c.queued_bytes();
    assert!(with_close > 100 && budget.total() == with_close, "{with_close} vs {}", budget.total());
    // Once a Close is queued nothing more goes in, and a second Close is not queued.
    assert_eq!(c.push(bytes(1)), Push::Closed);
    assert_eq!(c.push_control(bytes(1), false), Push::Closed);
    assert!(!c.push_close(CloseCode::Away, "again"));
    // Gone: whatever it still had queued leaves the server-wide budget with it.
    drop(c);
    assert_eq!(budget.total(), 0);
}

#[test]
fn pongs_fill_the_cap_like_any_frame() {
    let (c, budget, _client) = conn(10);
    assert_eq!(c.push_control(bytes(5), false), Push::Queued);
    assert_eq!(c.push_control(bytes(5), false), Push::Queued, "up to the cap exactly");
    assert_eq!(c.push_control(bytes(1), false), Push::Overflow);
    assert_eq!((c.queued_bytes(), budget.total()), (10, 10));
}

#[test]
fn shedding_keeps_only_the_first_frame_and_gives_the_rest_back() {
    let (c, budget, _client) = conn(1000);
    assert_eq!(c.shed(), 0, "nothing to shed");
    assert_eq!(c.push(bytes(100)), Push::Queued);
    assert_eq!(c.shed(), 0, "the first frame may be half-sent: it stays");
    assert_eq!(c.push(bytes(200)), Push::Queued);
    assert_eq!(c.shed(), 200, "two frames: the second goes");
    assert_eq!(c.push(bytes(300)), Push::Queued);
    assert_eq!(c.push(bytes(400)), Push::Queued);
    assert_eq!(c.shed(), 700);
    assert_eq!((c.queued_bytes(), budget.total()), (100, 100));
}
