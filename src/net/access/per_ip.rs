//! Per-address limits shared by every entrance: token buckets, the per-IP table, and the
//! client's address behind a trusted proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

    /// A bucket that starts full, whatever burst its first `take` gives (that caps it).
    fn full() -> Bucket {
        Bucket::new(f64::INFINITY)
    }

    /// Adds what `rate` earned since the last call, up to `burst`.
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Addresses one generation of the per-IP table holds before it is retired (see
/// [`IpTable`]). Bounds the table at twice this many entries plus the addresses with open
/// sessions.
const GENERATION_SIZE: usize = 10_000;

/// Per-IP state shared by the connection threads: WebSocket sessions, the upgrade bucket
/// (attempts and failed authentications) and the API `POST` bucket.
///
/// Expiry without a sweep on the hot path: entries live in two generations. A lookup looks
/// in the current one, then in the previous one (moving the entry forward). When the
/// current generation is full, or a minute has passed (`rotate`, called by the stats
/// thread), the previous generation is dropped — except the entries of addresses that
/// still have sessions open, which move forward — and the current one becomes the
/// previous. An address unseen for one to two generations is forgotten: its buckets would
/// have refilled by then anyway. Each operation is O(1), amortised over a generation.
pub struct IpTable {
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<IpAddr, IpEntry>,
    previous: HashMap<IpAddr, IpEntry>,
}

#[derive(Debug)]
struct IpEntry {
    connections: usize,
    /// Upgrade attempts and failed HTTP authentications (both are credential guesses).
    upgrades: Bucket,
    /// `POST`s to the API (tickets, messages).
    posts: Bucket,
    /// Chat frames of all this address's WebSocket clients together.
    messages: Bucket,
    /// Bytes of history read (HTTP pages and WebSocket resumes); may go below zero, since a
    /// read's size is known only once it is done.
    history: Bucket,
}

impl IpEntry {
    /// Every bucket starts full at its own burst: an address seen first by an upgrade has
    /// its whole message burst too.
    fn new() -> IpEntry {
        IpEntry {
            connections: 0,
            upgrades: Bucket::full(),
            posts: Bucket::full(),
            messages: Bucket::full(),
            history: Bucket::full(),
        }
    }
}

impl Default for IpTable {
    fn default() -> Self {
        IpTable { inner: Mutex::new(Generations::default()) }
    }
}

impl Generations {
    fn entry(&mut self, ip: IpAddr) -> &mut IpEntry {
        if !self.current.contains_key(&ip) {
            // Taken out before a rotation, which would otherwise drop it.
            let e = self.previous.remove(&ip).unwrap_or_else(IpEntry::new);
            if self.current.len() >= GENERATION_SIZE {
                self.rotate();
            }
            self.current.insert(ip, e);
        }
        self.current.entry(ip).or_insert_with(IpEntry::new)
    }

    fn rotate(&mut self) {
        let retired = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
        // Open sessions must stay counted; there are at most --max-clients of them.
        self.current.extend(retired.into_iter().filter(|(_, e)| e.connections > 0));
    }
}

impl IpTable {
    /// Counts a session from `ip`. Returns the count including this one.
    pub fn connect(&self, ip: IpAddr) -> usize {
        let mut g = self.inner.lock();
        let e = g.entry(ip);
        e.connections += 1;
        e.connections
    }

    pub fn disconnect(&self, ip: IpAddr) {
        let mut g = self.inner.lock();
        let g = &mut *g;
        if let Some(e) = g.current.get_mut(&ip).or_else(|| g.previous.get_mut(&ip)) {
            e.connections = e.connections.saturating_sub(1);
        }
    }

    /// Takes an upgrade token for `ip`.
    pub fn allow_upgrade(&self, ip: IpAddr, rate: f64, burst: f64) -> bool {
        self.inner.lock().entry(ip).upgrades.take(rate, burst, Instant::now())
    }

    /// Takes an API `POST` token for `ip`.
    pub fn allow_post(&self, ip: IpAddr, rate: f64, burst: f64) -> bool {
        self.inner.lock().entry(ip).posts.take(rate, burst, Instant::now())
    }

    /// Takes a chat-frame token for `ip` (shared by all of that address's clients).
    pub fn allow_message(&self, ip: IpAddr, rate: f64, burst: f64) -> bool {
        self.inner.lock().entry(ip).messages.take(rate, burst, Instant::now())
    }

    /// How long `ip` must wait before it reads more history: zero unless its byte budget
    /// (`rate` bytes/s, bursts of `burst`) is spent.
    pub fn history_wait(&self, ip: IpAddr, rate: f64, burst: f64) -> Duration {
        let mut g = self.inner.lock();
        let b = &mut g.entry(ip).history;
        b.refill(rate, burst, Instant::now());
        if b.tokens > 0.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - b.tokens) / rate) }
    }

    /// Charges `bytes` of history read to `ip`'s budget, which may go into debt.
    pub fn charge_history(&self, ip: IpAddr, rate: f64, burst: f64, bytes: usize) {
        let mut g = self.inner.lock();
        let b = &mut g.entry(ip).history;
        b.refill(rate, burst, Instant::now());
        b.tokens -= bytes as f64;
    }

    /// Starts a new generation (the stats thread calls this once a minute).
    pub fn rotate(&self) {
        self.inner.lock().rotate();
    }

    /// Addresses tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        let g = self.inner.lock();
        g.current.len() + g.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's address as every per-address limit counts it (see [`address_of`]): the TCP
/// peer, unless that is a trusted proxy (`--trusted-proxy`); then the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left were
/// written by the client and prove nothing).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return address_of(peer);
    }
    let Some(list) = forwarded_for else { return address_of(peer) };
    for entry in list.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return address_of(ip),
            Err(_) => return address_of(peer), // garbage: do not guess
        }
    }
    address_of(peer)
}

/// What one "address" is to a per-address limit: an IPv4 address, or an IPv6 /64 network.
/// One IPv6 subscriber is given a /64 (or more) and may use any of its 2^64 addresses, so
/// counting single IPv6 addresses would give one client unlimited "addresses". An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, from a dual-stack socket) is its IPv4.
pub fn address_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
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
    fn ip_table_counts_and_limits() {
        let t = IpTable::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(t.connect(ip), 1);
        assert_eq!(t.connect(ip), 2);
        t.disconnect(ip);
        assert_eq!(t.connect(ip), 2);
        assert!(t.allow_upgrade(ip, 1.0, 2.0));
        assert!(t.allow_upgrade(ip, 1.0, 2.0));
        assert!(!t.allow_upgrade(ip, 1.0, 2.0));
    }

    #[test]
    fn an_ipv6_address_counts_as_its_64_and_a_mapped_ipv4_as_the_ipv4() {
        let v = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(address_of(v("203.0.113.7")), v("203.0.113.7"));
        assert_eq!(address_of(v("::ffff:203.0.113.7")), v("203.0.113.7"));
        assert_eq!(address_of(v("2001:db8:1:2:ffff:ffff:ffff:ffff")), v("2001:db8:1:2::"));
        assert_ne!(address_of(v("2001:db8:1:3::1")), address_of(v("2001:db8:1:2::1")));
        assert_eq!(address_of(v("::1")), v("::"));
    }

    #[test]
    fn an_address_first_seen_by_an_upgrade_still_has_its_whole_message_burst() {
        let t = IpTable::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        t.connect(ip);
        assert!(t.allow_upgrade(ip, 10.0, 20.0));
        // The messages bucket is the address's own: 200 at once, then none (at 1/s).
        assert!((0..200).all(|_| t.allow_message(ip, 1.0, 200.0)));
        assert!(!t.allow_message(ip, 1.0, 200.0));
        // Another address is untouched.
        assert!(t.allow_message([10, 0, 0, 2].into(), 1.0, 200.0));
    }

    #[test]
    fn ip_table_stays_bounded_and_keeps_open_sessions_and_recent_buckets() {
        let t = IpTable::default();
        let busy: IpAddr = [10, 0, 0, 1].into();
        let guesser: IpAddr = [10, 0, 0, 2].into();
        t.connect(busy);
        assert!(t.allow_upgrade(guesser, 1.0, 2.0) && t.allow_upgrade(guesser, 1.0, 2.0));
        assert!(!t.allow_upgrade(guesser, 1.0, 2.0));
        // A flood of 100,000 addresses: the table never holds more than two generations.
        for i in 0..100_000u32 {
            t.allow_upgrade(IpAddr::from((0x0b00_0000 + i).to_be_bytes()), 1.0, 2.0);
            assert!(t.len() <= 2 * GENERATION_SIZE + 1);
        }
        // The open session is still counted.
        assert_eq!(t.connect(busy), 2);
        // A recent guesser keeps its empty bucket across one rotation.
        let t = IpTable::default();
        assert!(t.allow_upgrade(guesser, 1.0, 2.0) && t.allow_upgrade(guesser, 1.0, 2.0));
        t.rotate();
        assert!(!t.allow_upgrade(guesser, 1.0, 2.0), "still empty after one generation");
    }

    #[test]
    fn the_minute_rotation_forgets_idle_addresses_after_two_generations_but_not_open_sessions() {
        let t = IpTable::default();
        assert!(t.is_empty());
        let busy: IpAddr = [10, 0, 0, 1].into();
        let guesser: IpAddr = [10, 0, 0, 2].into();
        t.connect(busy);
        assert!(t.allow_upgrade(guesser, 1.0, 2.0) && t.allow_upgrade(guesser, 1.0, 2.0));
        assert_eq!(t.len(), 2);
        assert!(!t.is_empty());
        t.rotate();
        assert_eq!(t.len(), 2, "one rotation keeps both (the guesser in the previous generation)");
        t.rotate();
        assert_eq!(t.len(), 1, "two rotations forget the idle guesser, not the open session");
        // Forgotten: a fresh, full bucket. The open session is still counted.
        assert!(t.allow_upgrade(guesser, 1.0, 2.0));
        assert_eq!(t.connect(busy), 2);
        t.disconnect(busy);
        t.disconnect(busy);
        t.disconnect(guesser);
        t.rotate();
        t.rotate();
        assert!(t.is_empty(), "{} addresses left", t.len());
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let trusted = [proxy];
        // From the proxy: the rightmost untrusted entry (the left one is client-written).
        assert_eq!(client_ip(proxy, Some("6.6.6.6, 203.0.113.7"), &trusted), client);
        assert_eq!(client_ip(proxy, Some("203.0.113.7, 10.0.0.1"), &trusted), client);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("junk"), &trusted), proxy);
        // From anyone else the header is ignored.
        assert_eq!(client_ip(client, Some("1.2.3.4"), &trusted), client);
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &[]), proxy);
        // IPv6 clients count by their /64, behind a proxy or not.
        let net: IpAddr = "2001:db8:1:2::".parse().unwrap();
        assert_eq!(client_ip(proxy, Some("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), &trusted), net);
        assert_eq!(client_ip("2001:db8:1:2::7".parse().unwrap(), None, &trusted), net);
    }
}
