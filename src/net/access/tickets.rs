//! One-time upgrade tickets: what a browser page uses instead of the long-lived token,
//! because a page cannot put headers on a WebSocket and a secret does not belong in a URL.
//! Random (128 bits), single use, valid for [`TICKET_TTL`], and only from the address that
//! asked for it. Outstanding tickets are a shared budget: [`MAX_TICKETS`] in all, of which
//! one address may hold [`MAX_TICKETS_PER_IP`], so no address can lock out the others.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::net::access::auth::Identity;

/// How long a ticket from `POST /api/ticket` is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets at most (expired ones are swept first; past it, `503`).
pub const MAX_TICKETS: usize = 10_000;
/// Outstanding tickets one address may hold (past it, `429`): a page needs one per
/// connection attempt, a household behind one address a few.
pub const MAX_TICKETS_PER_IP: usize = 64;

#[derive(Default)]
pub struct Tickets {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tickets: HashMap<String, Ticket>,
    /// Each address's outstanding tickets, oldest first (expiry order: one TTL for all).
    by_ip: HashMap<IpAddr, VecDeque<(Instant, String)>>,
}

struct Ticket {
    owner: IpAddr,
    expires: Instant,
    /// Who bought it: a JWT's name and user travel with the ticket to the socket.
    identity: Identity,
}

/// Why no ticket was issued.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTicket {
    /// This address holds its share already (`429`).
    AddressFull,
    /// All outstanding tickets are taken (`503`).
    Full,
    /// No randomness (`503`).
    NoRandom,
}

impl Tickets {
    /// Issues a ticket for `ip`, carrying `identity`.
    pub fn issue(&self, ip: IpAddr, identity: Identity) -> Result<String, NoTicket> {
        let ticket = random_hex::<16>().ok_or(NoTicket::NoRandom)?;
        let now = Instant::now();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mine = inner.by_ip.entry(ip).or_default();
        // This address's expired (or already redeemed) tickets no longer count.
        while mine.front().is_some_and(|(expires, t)| *expires <= now || !inner.tickets.contains_key(t)) {
            if let Some((_, t)) = mine.pop_front() {
                inner.tickets.remove(&t);
            }
        }
        if mine.len() >= MAX_TICKETS_PER_IP {
            return Err(NoTicket::AddressFull);
        }
        if inner.tickets.len() >= MAX_TICKETS {
            inner.tickets.retain(|_, t| t.expires > now);
            if inner.tickets.len() >= MAX_TICKETS {
                return Err(NoTicket::Full);
            }
        }
        let expires = now + TICKET_TTL;
        mine.push_back((expires, ticket.clone()));
        inner.tickets.insert(ticket.clone(), Ticket { owner: ip, expires, identity });
        Ok(ticket)
    }

    /// Consumes `ticket` if it is valid for `ip`. Any use — right or wrong address — burns
    /// it, so a stolen ticket cannot be retried.
    pub fn redeem(&self, ticket: &str, ip: IpAddr) -> Option<Identity> {
        let mut inner = self.inner.lock();
        let t = inner.tickets.remove(ticket)?;
        if let Some(mine) = inner.by_ip.get_mut(&t.owner) {
            mine.retain(|(_, other)| other != ticket);
            if mine.is_empty() {
                inner.by_ip.remove(&t.owner);
            }
        }
        (t.owner == ip && Instant::now() < t.expires).then_some(t.identity)
    }
}

fn random_hex<const N: usize>() -> Option<String> {
    Some(crate::random::bytes::<N>()?.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Identity {
        Identity::Named {
            name: "ada".into(),
            user: "ada".into(),
            expires: u64::MAX,
            rooms: None,
            role: crate::chat::moderation::Role::Member,
        }
    }

    #[test]
    fn tickets_are_single_use_random_and_bound_to_an_address() {
        let t = Tickets::default();
        let me: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let a = t.issue(me, Identity::Anonymous).unwrap();
        let b = t.issue(me, ada()).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(t.redeem(&a, me), Some(Identity::Anonymous));
        assert_eq!(t.redeem(&a, me), None, "second use");
        assert_eq!(t.redeem(&b, other), None, "another address");
        assert_eq!(t.redeem(&b, me), None, "burnt by the wrong-address attempt");
        assert_eq!(t.redeem("made-up", me), None);
        let c = t.issue(me, ada()).unwrap();
        let d = t.issue(me, Identity::Anonymous).unwrap();
        assert_eq!(t.redeem(&c, me), Some(ada()));
        t.inner.lock().tickets.get_mut(&d).unwrap().expires = Instant::now() - Duration::from_secs(1);
        assert_eq!(t.redeem(&d, me), None, "expired");
    }

    #[test]
    fn all_outstanding_tickets_taken_is_full_for_everyone() {
        let t = Tickets::default();
        let per_ip = MAX_TICKETS_PER_IP;
        for n in 0..MAX_TICKETS.div_ceil(per_ip) {
            let ip: IpAddr = [10, 1, (n / 256) as u8, (n % 256) as u8].into();
            for _ in 0..per_ip.min(MAX_TICKETS - n * per_ip) {
                t.issue(ip, Identity::Anonymous).unwrap();
            }
        }
        assert_eq!(t.issue([10, 2, 0, 1].into(), Identity::Anonymous), Err(NoTicket::Full));
        // Expired ones are swept to make room.
        for ticket in t.inner.lock().tickets.values_mut().take(1) {
            ticket.expires = Instant::now() - Duration::from_secs(1);
        }
        assert!(t.issue([10, 2, 0, 1].into(), Identity::Anonymous).is_ok());
    }

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let t = Tickets::default();
        let greedy: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<String> =
            (0..MAX_TICKETS_PER_IP).map(|_| t.issue(greedy, Identity::Anonymous).unwrap()).collect();
        assert_eq!(t.issue(greedy, Identity::Anonymous), Err(NoTicket::AddressFull));
        assert!(t.issue([10, 0, 0, 2].into(), Identity::Anonymous).is_ok(), "others are not affected");
        // Using one gives the address room for one more.
        assert!(t.redeem(&held[5], greedy).is_some());
        assert!(t.issue(greedy, Identity::Anonymous).is_ok());
        assert_eq!(t.issue(greedy, Identity::Anonymous), Err(NoTicket::AddressFull));
        // So does one expiring (its oldest, never used).
        {
            let mut inner = t.inner.lock();
            let past = Instant::now() - Duration::from_secs(1);
            inner.tickets.get_mut(&held[0]).unwrap().expires = past;
            inner.by_ip.get_mut(&greedy).unwrap()[0].0 = past;
        }
        assert!(t.issue(greedy, Identity::Anonymous).is_ok(), "an expired ticket no longer counts");
    }
}
