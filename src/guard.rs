//! Access checks shared by the WebSocket upgrade and the HTTP API: credentials (token, JWT,
//! one-time tickets), the client's address behind a proxy, and per-address rate buckets.
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
    /// Upgrade attempts and failed HTTP authentications (both are credential guesses).
    upgrades: Bucket,
    /// `POST`s to the API (tickets, messages).
    posts: Bucket,
}

impl IpEntry {
    /// Both buckets start with `burst` tokens; each then refills to its own burst (`take`
    /// caps it), so one size at creation is enough.
    fn new(burst: f64) -> IpEntry {
        IpEntry { connections: 0, upgrades: Bucket::new(burst), posts: Bucket::new(burst) }
    }
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
        let e = map.entry(ip).or_insert_with(|| IpEntry::new(burst));
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
        let e = map.entry(ip).or_insert_with(|| IpEntry::new(burst));
        e.upgrades.take(rate, burst, Instant::now())
    }

    /// Takes an API `POST` token for `ip`.
    pub fn allow_post(&self, ip: IpAddr, rate: f64, burst: f64) -> bool {
        let mut map = self.inner.lock();
        let e = map.entry(ip).or_insert_with(|| IpEntry::new(burst));
        e.posts.take(rate, burst, Instant::now())
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
            return Some(crate::files::percent_decode(v).unwrap_or_else(|| v.to_string()));
        }
    }
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER` are fine.
    if let Some((scheme, rest)) = authorization.and_then(|a| a.trim().split_once(' '))
        && scheme.eq_ignore_ascii_case("bearer")
    {
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
        assert_eq!(token_from("", Some("bearer abc"), None).as_deref(), Some("abc"));
        assert_eq!(token_from("", Some("BEARER  abc "), None).as_deref(), Some("abc"));
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
    inner: Mutex<HashMap<String, Ticket>>,
}

struct Ticket {
    owner: IpAddr,
    expires: Instant,
    /// The JWT name the ticket carries, if it was bought with a JWT.
    name: Option<String>,
}

impl Tickets {
    /// Issues a ticket for `ip`; `None` if too many are outstanding.
    /// `name`: the JWT name the ticket carries, if the requester had one.
    pub fn issue(&self, ip: IpAddr, name: Option<String>) -> Option<String> {
        let ticket = random_hex(16)?;
        let mut map = self.inner.lock();
        let now = Instant::now();
        if map.len() >= MAX_TICKETS {
            map.retain(|_, t| t.expires > now);
            if map.len() >= MAX_TICKETS {
                return None;
            }
        }
        map.insert(ticket.clone(), Ticket { owner: ip, expires: now + TICKET_TTL, name });
        Some(ticket)
    }

    /// Consumes `ticket` if it is valid for `ip`. Any use — right or wrong address — burns
    /// it, so a stolen ticket cannot be retried.
    pub fn redeem(&self, ticket: &str, ip: IpAddr) -> Option<Identity> {
        match self.inner.lock().remove(ticket) {
            Some(t) if t.owner == ip && Instant::now() < t.expires => {
                Some(t.name.map_or(Identity::Anonymous, Identity::Named))
            }
            _ => None,
        }
    }
}

/// `bytes` random bytes from the kernel's CSPRNG, hex-encoded.
/// The client's address: the TCP peer, unless that is a trusted proxy (`--trusted-proxy`);
/// then the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (entries
/// further left were written by the client and prove nothing).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else { return peer };
    for entry in list.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer, // garbage: do not guess
        }
    }
    peer
}

/// 64 random bits from the kernel's CSPRNG.
pub fn random_u64() -> Option<u64> {
    use std::io::Read;
    let mut buf = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).ok()?;
    Some(u64::from_le_bytes(buf))
}

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
    }

    #[test]
    fn tickets_are_single_use_random_and_bound_to_an_address() {
        let t = Tickets::default();
        let me: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let a = t.issue(me, None).unwrap();
        let b = t.issue(me, Some("ada".into())).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(t.redeem(&a, me), Some(Identity::Anonymous));
        assert_eq!(t.redeem(&a, me), None, "second use");
        assert_eq!(t.redeem(&b, other), None, "another address");
        assert_eq!(t.redeem(&b, me), None, "burnt by the wrong-address attempt");
        assert_eq!(t.redeem("made-up", me), None);
        let c = t.issue(me, Some("ada".into())).unwrap();
        let d = t.issue(me, None).unwrap();
        assert_eq!(t.redeem(&c, me), Some(Identity::Named("ada".into())));
        t.inner.lock().get_mut(&d).unwrap().expires = Instant::now() - std::time::Duration::from_secs(1);
        assert_eq!(t.redeem(&d, me), None, "expired");
    }
}

/// Names that JWT logins have used since the server started: a shared-token or anonymous
/// client may not take one (by rename, or by posting under it), so a JWT user's name is
/// theirs alone. Compared case-insensitively ("Ada" and "ada" look the same in a chat).
#[derive(Default)]
pub struct LoginNames {
    names: Mutex<std::collections::HashSet<String>>,
}

/// Names remembered at most: a bound on memory however many JWT users come and go.
const MAX_LOGIN_NAMES: usize = 100_000;

impl LoginNames {
    pub fn note(&self, name: &str) {
        let mut names = self.names.lock();
        if names.len() < MAX_LOGIN_NAMES {
            names.insert(name.to_lowercase());
        }
    }

    pub fn is_taken(&self, name: &str) -> bool {
        self.names.lock().contains(&name.to_lowercase())
    }
}

/// What an accepted credential says about the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    /// The shared token: anonymous, picks its own name.
    Anonymous,
    /// A JWT: this display name, which the client cannot change.
    Named(String),
}

/// Checks a credential against `--token` and `--jwt-secret`. `None`: refused.
pub fn authenticate(credential: &str, token: Option<&str>, jwt_secret: Option<&str>) -> Option<Identity> {
    if let Some(secret) = jwt_secret
        && let Some(name) = verify_jwt(credential, secret)
    {
        return Some(Identity::Named(name));
    }
    match token {
        Some(t) if constant_time_eq(credential.as_bytes(), t.as_bytes()) => Some(Identity::Anonymous),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    name: Option<String>,
    sub: Option<String>,
}

/// An HS256 JWT with a valid signature and `exp` (required; 60 s leeway for clock skew);
/// returns the display name from `name`, else `sub`, if it is a valid name.
fn verify_jwt(jwt: &str, secret: &str) -> Option<String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let mut validation = Validation::new(Algorithm::HS256); // only HS256: no "alg":"none" tricks
    validation.validate_nbf = true; // a token that is not valid yet is not valid
    let data = decode::<Claims>(jwt, &DecodingKey::from_secret(secret.as_bytes()), &validation).ok()?;
    let name = data.claims.name.or(data.claims.sub)?;
    crate::protocol::validate_name(&name).ok()?;
    Some(name)
}

#[cfg(test)]
mod jwt_tests {
    use super::*;

    fn jwt(secret: &str, claims: serde_json::Value) -> String {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn jwts_are_verified_and_give_the_name() {
        let secret = "0123456789abcdef0123456789abcdef";
        let exp = crate::protocol::now_ms() / 1000 + 600;
        let ok = jwt(secret, serde_json::json!({"name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&ok, None, Some(secret)), Some(Identity::Named("Ada".into())));
        let sub = jwt(secret, serde_json::json!({"sub": "bob", "exp": exp}));
        assert_eq!(authenticate(&sub, None, Some(secret)), Some(Identity::Named("bob".into())));
        let expired = jwt(secret, serde_json::json!({"name": "Ada", "exp": exp - 1200}));
        assert_eq!(authenticate(&expired, None, Some(secret)), None);
        let no_exp = jwt(secret, serde_json::json!({"name": "Ada"}));
        assert_eq!(authenticate(&no_exp, None, Some(secret)), None);
        let other_key = jwt("another-secret-another-secret-xx", serde_json::json!({"name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&other_key, None, Some(secret)), None);
        let bad_name = jwt(secret, serde_json::json!({"name": "a\u{7}b", "exp": exp}));
        assert_eq!(authenticate(&bad_name, None, Some(secret)), None);
        // The shared token still works alongside.
        assert_eq!(
            authenticate("tok-tok-tok-tok-tok", Some("tok-tok-tok-tok-tok"), Some(secret)),
            Some(Identity::Anonymous)
        );
    }
}
