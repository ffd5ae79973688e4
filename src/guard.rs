//! Admission control at the WebSocket upgrade, and rate limits.
//!
//! Every check here runs **before** the `101`, so a refused client gets a real HTTP status:
//! - `403` for a browser page from a foreign origin (cross-site WebSocket hijacking: a page
//!   elsewhere could otherwise open a socket with the victim's cookies);
//! - `401` for a missing or wrong token, when `--token` is set;
//! - `503` over `--max-clients-per-ip`;
//! - `429` over the per-IP upgrade rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(burst: f64) -> Bucket {
        Bucket { tokens: burst, last: Instant::now() }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Entries kept in the per-IP maps before idle ones are swept (bounds memory under a
/// flood of source addresses).
const MAX_TRACKED_IPS: usize = 10_000;

/// Per-IP state shared by the client threads: open connections and the upgrade bucket.
pub struct IpTable {
    inner: Mutex<HashMap<IpAddr, IpEntry>>,
}

#[derive(Debug)]
struct IpEntry {
    connections: usize,
    upgrades: Bucket,
}

impl Default for IpTable {
    fn default() -> Self {
        IpTable { inner: Mutex::new(HashMap::new()) }
    }
}

impl IpTable {
    /// Counts a connection from `ip` until the returned guard drops. Returns the count
    /// including this one.
    pub fn connect(&self, ip: IpAddr, burst: f64) -> usize {
        let mut map = self.inner.lock();
        if map.len() >= MAX_TRACKED_IPS && !map.contains_key(&ip) {
            // Forget addresses with no connection whose bucket has refilled.
            let now = Instant::now();
            map.retain(|_, e| e.connections > 0 || now.duration_since(e.upgrades.last).as_secs() < 60);
        }
        let e = map.entry(ip).or_insert_with(|| IpEntry { connections: 0, upgrades: Bucket::new(burst) });
        e.connections += 1;
        e.connections
    }

    pub fn disconnect(&self, ip: IpAddr) {
        let mut map = self.inner.lock();
        if let Some(e) = map.get_mut(&ip) {
            e.connections = e.connections.saturating_sub(1);
        }
    }

    /// Takes an upgrade token for `ip`.
    pub fn allow_upgrade(&self, ip: IpAddr, rate: f64, burst: f64) -> bool {
        let mut map = self.inner.lock();
        let e = map.entry(ip).or_insert_with(|| IpEntry { connections: 0, upgrades: Bucket::new(burst) });
        e.upgrades.take(rate, burst, Instant::now())
    }
}

/// Compares secrets in time that does not depend on where they differ (only on length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential a request carries: `?token=`, `Authorization: Bearer`, or the
/// `threadchat_token` cookie, in that order.
pub fn token_from(query: &str, authorization: Option<&str>, cookie: Option<&str>) -> Option<String> {
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k == "token" {
            return Some(crate::http::percent_decode(v).unwrap_or_else(|| v.to_string()));
        }
    }
    if let Some(rest) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        return Some(rest.trim().to_string());
    }
    cookie?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == "threadchat_token")
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = Bucket { tokens: 2.0, last: start };
        assert!(b.take(10.0, 2.0, start));
        assert!(b.take(10.0, 2.0, start));
        assert!(!b.take(10.0, 2.0, start));
        assert!(b.take(10.0, 2.0, start + Duration::from_millis(100)));
        assert!(!b.take(10.0, 2.0, start + Duration::from_millis(100)));
        // Never more than the burst, however long it waited.
        let later = start + Duration::from_secs(60);
        assert!(b.take(10.0, 2.0, later) && b.take(10.0, 2.0, later) && !b.take(10.0, 2.0, later));
    }

    #[test]
    fn tokens_are_found_in_every_place() {
        assert_eq!(token_from("a=1&token=s%20x", None, None).as_deref(), Some("s x"));
        assert_eq!(token_from("", Some("Bearer abc"), None).as_deref(), Some("abc"));
        assert_eq!(token_from("", None, Some("x=1; threadchat_token=zz")).as_deref(), Some("zz"));
        assert_eq!(token_from("", Some("Basic abc"), Some("other=1")), None);
        assert_eq!(token_from("token=%zz", None, None).as_deref(), Some("%zz"));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn ip_table_counts_and_limits() {
        let t = IpTable::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(t.connect(ip, 2.0), 1);
        assert_eq!(t.connect(ip, 2.0), 2);
        t.disconnect(ip);
        assert_eq!(t.connect(ip, 2.0), 2);
        assert!(t.allow_upgrade(ip, 1.0, 2.0));
        assert!(t.allow_upgrade(ip, 1.0, 2.0));
        assert!(!t.allow_upgrade(ip, 1.0, 2.0));
    }
}

/// How long a ticket from `POST /api/ticket` is valid.
pub const TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Outstanding tickets at most (expired ones are swept first; past it, new requests get 503).
const MAX_TICKETS: usize = 10_000;

/// One-time upgrade tickets: what a browser page uses instead of the long-lived token,
/// because a page cannot put headers on a WebSocket and a secret does not belong in a URL.
/// Random (128 bits), single use, valid for `TICKET_TTL`, and only from the address that
/// asked for it.
#[derive(Default)]
pub struct Tickets {
    inner: Mutex<HashMap<String, (IpAddr, Instant)>>,
}

impl Tickets {
    /// Issues a ticket for `ip`; `None` if too many are outstanding.
    pub fn issue(&self, ip: IpAddr) -> Option<String> {
        let ticket = random_hex(16)?;
        let mut map = self.inner.lock();
        let now = Instant::now();
        if map.len() >= MAX_TICKETS {
            map.retain(|_, (_, expires)| *expires > now);
            if map.len() >= MAX_TICKETS {
                return None;
            }
        }
        map.insert(ticket.clone(), (ip, now + TICKET_TTL));
        Some(ticket)
    }

    /// Consumes `ticket` if it is valid for `ip`. Any use — right or wrong address — burns
    /// it, so a stolen ticket cannot be retried.
    pub fn redeem(&self, ticket: &str, ip: IpAddr) -> bool {
        match self.inner.lock().remove(ticket) {
            Some((owner, expires)) => owner == ip && Instant::now() < expires,
            None => false,
        }
    }
}

/// `bytes` random bytes from the kernel's CSPRNG, hex-encoded.
fn random_hex(bytes: usize) -> Option<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).ok()?;
    Some(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod ticket_tests {
    use super::*;

    #[test]
    fn tickets_are_single_use_random_and_bound_to_an_address() {
        let t = Tickets::default();
        let me: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let a = t.issue(me).unwrap();
        let b = t.issue(me).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(t.redeem(&a, me));
        assert!(!t.redeem(&a, me), "second use");
        assert!(!t.redeem(&b, other), "another address");
        assert!(!t.redeem(&b, me), "burnt by the wrong-address attempt");
        assert!(!t.redeem("made-up", me));
        let c = t.issue(me).unwrap();
        t.inner.lock().get_mut(&c).unwrap().1 = Instant::now() - std::time::Duration::from_secs(1);
        assert!(!t.redeem(&c, me), "expired");
    }
}
