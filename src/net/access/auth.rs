//! Credentials: where a request carries one, what it proves (a shared token, or a JWT that
//! names a user), and a rule that follows from a login: one user may hold only so many
//! connections. (Guests' identities are in `identity.rs`; names in `chat/names.rs`.)

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::chat::moderation::Role;

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
    if let Some(token) = crate::net::query::get(query, "token") {
        return Some(token);
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

/// What an accepted credential says about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The shared token (or no authentication at all): a guest, whose user id comes from
    /// its guest identity (`identity.rs`), and who picks its own name.
    Anonymous,
    /// A JWT: this display name (the `name` claim, else `sub`), which the client cannot
    /// change, of this user (the `sub` claim), whose connections are counted together.
    /// `expires`: the first Unix second at which the token is no longer accepted
    /// (`exp` plus the leeway plus 1); a connection it opened is closed then.
    /// `rooms`: the JWT's `rooms` claim, if it had one: the only rooms this user may
    /// enter (see [`RoomAccess`]).
    /// `role`: the `roles` claim's moderation rights (`mod_rooms` for a moderator).
    Named { name: String, user: String, expires: u64, rooms: Option<Vec<String>>, role: Role },
}

/// Checks a credential against `--token` and `--jwt-secret`. `None`: refused.
pub fn authenticate(credential: &str, token: Option<&str>, jwt_secret: Option<&str>) -> Option<Identity> {
    if let Some(secret) = jwt_secret
        && let Some(identity) = verify_jwt(credential, secret)
    {
        return Some(identity);
    }
    match token {
        Some(t) if constant_time_eq(credential.as_bytes(), t.as_bytes()) => Some(Identity::Anonymous),
        _ => None,
    }
}

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const JWT_LEEWAY_SECS: u64 = 60;

#[derive(serde::Deserialize)]
struct JwtHeader {
    alg: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    /// Room names, or prefixes ending in `*` (`team-*`).
    rooms: Option<Vec<String>>,
    name: Option<String>,
    sub: Option<String>,
    /// `"admin"` and/or `"mod"`; other roles are ignored (they may be another service's).
    roles: Option<Vec<String>>,
    /// The rooms a `"mod"` moderates: names or `prefix*` patterns.
    mod_rooms: Option<Vec<String>>,
    exp: u64,
    nbf: Option<u64>,
}

/// An HS256 JWT with a valid signature, `sub` and `exp` (required), `nbf` (if present),
/// 60 s leeway for clock skew. `sub` is the user: a valid user id that does not look like a
/// guest's. The display name comes from `name`, else `sub`, and must be a valid name (in
/// NFC).
fn verify_jwt(jwt: &str, secret: &str) -> Option<Identity> {
    let claims = verify_hs256(jwt, secret.as_bytes(), crate::clock::now_ms() / 1000)?;
    let user = claims.sub?;
    crate::chat::protocol::validate_user(&user).ok()?;
    // Guests' ids and the server's own (`~system`, announcements) are not for a login.
    if user.starts_with(crate::net::access::identity::GUEST_PREFIX) || user.starts_with('~') {
        return None;
    }
    let name = crate::chat::protocol::normalize_name(claims.name.as_ref().unwrap_or(&user)).ok()?;
    // A claim this server cannot read refuses the token: guessing what it meant could open
    // a room it was meant to keep shut.
    if let Some(rooms) = &claims.rooms
        && (rooms.len() > MAX_ROOM_PATTERNS
            || rooms.iter().any(|p| crate::chat::protocol::validate_room_pattern(p).is_err()))
    {
        return None;
    }
    let roles = claims.roles.unwrap_or_default();
    let role = if roles.iter().any(|r| r == "admin") {
        Role::Admin
    } else if roles.iter().any(|r| r == "mod") {
        let rooms = claims.mod_rooms.unwrap_or_default();
        if rooms.len() > MAX_ROOM_PATTERNS
            || rooms.iter().any(|p| crate::chat::protocol::validate_room_pattern(p).is_err())
        {
            return None;
        }
        Role::Mod(rooms)
    } else {
        Role::Member
    };
    let expires = claims.exp.saturating_add(JWT_LEEWAY_SECS + 1);
    Some(Identity::Named { name, user, expires, rooms: claims.rooms, role })
}

/// RFC 7519 with one algorithm: `header.payload.signature`, each base64url without padding;
/// the header must say HS256 (so `"alg":"none"` and public-key algorithms are refused), the
/// HMAC-SHA256 of `header.payload` must match (compared in constant time by ring, the
/// library rustls already brings), and the time claims must hold at `now` (Unix seconds).
fn verify_hs256(jwt: &str, secret: &[u8], now: u64) -> Option<Claims> {
    let mut parts = jwt.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| data_encoding::BASE64URL_NOPAD.decode(part.as_bytes()).ok();
    let header: JwtHeader = serde_json::from_slice(&decode(header)?).ok()?;
    if header.alg != "HS256" {
        return None;
    }
    let signed = &jwt[..jwt.len() - signature.len() - 1];
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, signed.as_bytes(), &decode(signature)?).ok()?;
    let claims: Claims = serde_json::from_slice(&decode(payload)?).ok()?;
    let expired = claims.exp.saturating_add(JWT_LEEWAY_SECS) < now;
    let not_yet = claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(JWT_LEEWAY_SECS));
    (!expired && !not_yet).then_some(claims)
}

/// Patterns a `rooms` claim may hold.
const MAX_ROOM_PATTERNS: usize = 100;

/// What a credential opens. Which rooms a client may enter, read and post in: with a JWT
/// `rooms` claim, exactly those; otherwise every room but the private ones
/// (`--private-room`), which only a claim opens. And which it moderates (`role`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomAccess {
    claim: Option<Vec<String>>,
    /// And what the credential lets its holder moderate (the JWT's `roles`).
    pub role: Role,
}

/// What a client hears when a room is not open to it — the same whether the room exists,
/// is private or is outside its claim, so a refusal tells nothing about the room.
pub const ROOM_CLOSED: &str = "that room is not open to you";

impl RoomAccess {
    pub fn of(identity: &Identity) -> RoomAccess {
        match identity {
            Identity::Named { rooms, role, .. } => RoomAccess { claim: rooms.clone(), role: role.clone() },
            Identity::Anonymous => RoomAccess::default(),
        }
    }

    pub fn may_enter(&self, room: &str, private: &[String]) -> bool {
        match &self.claim {
            Some(patterns) => patterns.iter().any(|p| crate::chat::protocol::pattern_matches(p, room)),
            None => !private.iter().any(|p| crate::chat::protocol::pattern_matches(p, room)),
        }
    }
}

/// Open WebSocket sessions per JWT user (`--max-connections-per-user`): one account cannot
/// take the server's connections from many addresses.
#[derive(Default)]
pub struct UserSessions {
    open: Mutex<HashMap<Arc<str>, usize>>,
}

/// One session counted for a user until dropped.
pub struct UserSlot<'a> {
    sessions: &'a UserSessions,
    user: Arc<str>,
}

impl UserSessions {
    /// Counts a session of `user`, unless it already has `max`. (The id is shared, not
    /// copied: every idle session holds one.)
    pub fn enter(&self, user: &Arc<str>, max: usize) -> Option<UserSlot<'_>> {
        let mut open = self.open.lock();
        let n = open.entry(Arc::clone(user)).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UserSlot { sessions: self, user: Arc::clone(user) })
    }
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs as any JWT library would (the integration tests' helper does the same).
    fn jwt(secret: &str, claims: serde_json::Value) -> String {
        sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims.to_string(), secret)
    }

    fn sign(header: &str, payload: &str, secret: &str) -> String {
        let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
        let signed = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        format!("{signed}.{}", b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref()))
    }

    /// A JWT identity valid until `exp` plus the leeway.
    fn named(name: &str, user: &str, exp: u64) -> Option<Identity> {
        Some(Identity::Named {
            name: name.into(),
            user: user.into(),
            expires: exp + JWT_LEEWAY_SECS + 1,
            rooms: None,
            role: Role::Member,
        })
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
        // Two differences whose XORs cancel (a^b == b^a) must still differ: OR, not XOR.
        assert!(!constant_time_eq(b"ab", b"ba"));
        assert!(!constant_time_eq(b"\x01\x02", b"\x02\x01"));
    }

    #[test]
    fn jwts_are_verified_and_give_the_name_and_user() {
        let secret = "0123456789abcdef0123456789abcdef";
        let exp = crate::clock::now_ms() / 1000 + 600;
        let ok = jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&ok, None, Some(secret)), named("Ada", "Ada", exp));
        let sub = jwt(secret, serde_json::json!({"sub": "bob", "exp": exp}));
        assert_eq!(authenticate(&sub, None, Some(secret)), named("bob", "bob", exp));
        let both = jwt(secret, serde_json::json!({"sub": "u-17", "name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&both, None, Some(secret)), named("Ada", "u-17", exp));
        let expired = jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp - 1200}));
        assert_eq!(authenticate(&expired, None, Some(secret)), None);
        let not_yet = jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp, "nbf": exp - 60}));
        assert_eq!(authenticate(&not_yet, None, Some(secret)), None);
        let nbf_in_leeway =
            jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp, "nbf": exp - 600 + 30}));
        assert_eq!(authenticate(&nbf_in_leeway, None, Some(secret)), named("Ada", "Ada", exp));
        // `exp` 30 s ago is inside the 60 s leeway for clock skew; 120 s ago is not.
        let just_expired = jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp - 600 - 30}));
        assert_eq!(authenticate(&just_expired, None, Some(secret)), named("Ada", "Ada", exp - 600 - 30));
        let long_expired = jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp - 600 - 120}));
        assert_eq!(authenticate(&long_expired, None, Some(secret)), None);
        let no_exp = jwt(secret, serde_json::json!({"name": "Ada"}));
        assert_eq!(authenticate(&no_exp, None, Some(secret)), None);
        let other_key =
            jwt("another-secret-another-secret-xx", serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&other_key, None, Some(secret)), None);
        let bad_name = jwt(secret, serde_json::json!({"sub": "x", "name": "a\u{200B}b", "exp": exp}));
        assert_eq!(authenticate(&bad_name, None, Some(secret)), None);
        // "alg":"none", however the token is dressed up.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let body = ok.split('.').nth(1).unwrap();
        assert_eq!(authenticate(&format!("{header}.{body}."), None, Some(secret)), None);
        // Another algorithm named in a correctly signed header; a token in two or four
        // parts; padding; a signature of another message.
        let payload = serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp}).to_string();
        assert_eq!(authenticate(&sign(r#"{"alg":"HS512"}"#, &payload, secret), None, Some(secret)), None);
        assert_eq!(authenticate(&sign(r#"{"alg":"hs256"}"#, &payload, secret), None, Some(secret)), None);
        assert_eq!(
            authenticate(&sign(r#"{"alg":"HS256"}"#, &payload, secret), None, Some(secret)),
            named("Ada", "Ada", exp)
        );
        let (head_body, sig) = ok.rsplit_once('.').unwrap();
        assert_eq!(authenticate(head_body, None, Some(secret)), None);
        assert_eq!(authenticate(&format!("{ok}.x"), None, Some(secret)), None);
        assert_eq!(authenticate(&format!("{ok}="), None, Some(secret)), None);
        let other_body = jwt(secret, serde_json::json!({"sub": "Eve", "name": "Eve", "exp": exp}));
        let forged = format!("{}.{sig}", other_body.rsplit_once('.').unwrap().0);
        assert_eq!(authenticate(&forged, None, Some(secret)), None);
        // `sub` is required (it is the user), must be a valid id, and may not pose as a guest.
        let no_sub = jwt(secret, serde_json::json!({"name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&no_sub, None, Some(secret)), None);
        let guest_sub = jwt(secret, serde_json::json!({"sub": "guest~0123", "exp": exp}));
        assert_eq!(authenticate(&guest_sub, None, Some(secret)), None);
        let long_sub = jwt(secret, serde_json::json!({"sub": "x".repeat(129), "name": "Ada", "exp": exp}));
        assert_eq!(authenticate(&long_sub, None, Some(secret)), None);
        let string_exp = jwt(secret, serde_json::json!({"sub": "Ada", "name": "Ada", "exp": exp.to_string()}));
        assert_eq!(authenticate(&string_exp, None, Some(secret)), None);
        // The shared token still works alongside.
        assert_eq!(
            authenticate("tok-tok-tok-tok-tok", Some("tok-tok-tok-tok-tok"), Some(secret)),
            Some(Identity::Anonymous)
        );
    }

    /// The leeway's edges, at a fixed `now`: valid up to and including 60 s past `exp` and
    /// from 60 s before `nbf`.
    #[test]
    fn time_claims_hold_to_the_second() {
        let secret = "0123456789abcdef0123456789abcdef";
        let now = 1_800_000_000;
        let at = |claims: serde_json::Value| verify_hs256(&jwt(secret, claims), secret.as_bytes(), now).is_some();
        assert!(at(serde_json::json!({"sub": "a", "exp": now - 60})));
        assert!(!at(serde_json::json!({"sub": "a", "exp": now - 61})));
        assert!(at(serde_json::json!({"sub": "a", "exp": now + 600, "nbf": now + 60})));
        assert!(!at(serde_json::json!({"sub": "a", "exp": now + 600, "nbf": now + 61})));
    }

    #[test]
    fn user_sessions_are_capped_and_released() {
        let s = UserSessions::default();
        let a = s.enter(&Arc::from("ada"), 2).unwrap();
        let _b = s.enter(&Arc::from("ada"), 2).unwrap();
        assert!(s.enter(&Arc::from("ada"), 2).is_none());
        assert!(s.enter(&Arc::from("bob"), 2).is_some());
        drop(a);
        assert!(s.enter(&Arc::from("ada"), 2).is_some());
        drop(_b);
        // A user with no session left is forgotten (the map does not grow with every user).
        let c = s.enter(&Arc::from("carol"), 1).unwrap();
        drop(c);
        assert!(!s.open.lock().contains_key("carol"));
    }
}
