//! Guest identities: who a client without a JWT is. A JWT names its user (`sub`); a guest
//! (an open server, or the shared `--token`) gets a random user id from the server and a
//! credential that proves it — the id and its HMAC-SHA256 under the server's *identity
//! key* — so a reload or a reconnect (`?identity=…`, or the `threadchat_identity` cookie
//! the page keeps) is the same user, with the same direct messages. Nobody can make a
//! credential for an id the server did not issue, nor change one's id, without the key.
//!
//! Where the key lives, first found: `--identity-secret` (every instance of a cluster
//! given the same); else, with `--redis`, the Redis key `threadchat:identity-key` (made
//! by the first instance, read by the others); else `DATA_DIR/identity.key` (made on
//! first start, mode 0600). Losing it makes every guest a new guest; nothing else.

use std::io::Write;
use std::path::Path;

use data_encoding::BASE64URL_NOPAD;

/// Guest user ids start with this; a JWT `sub` that does is refused, so a token can never
/// be taken for a guest (nor a guest for a token's user).
pub const GUEST_PREFIX: &str = "guest~";
/// The cookie the page keeps a guest's credential in.
pub const IDENTITY_COOKIE: &str = "threadchat_identity";
/// What a forged, altered or foreign credential gets (with 401).
pub const BAD_IDENTITY: &str = "identity not issued by this server (forged, altered, or from another deployment); connect without it for a new one";

/// Signs and checks guest credentials.
pub struct GuestKeys {
    key: ring::hmac::Key,
}

impl GuestKeys {
    pub fn new(secret: &[u8]) -> GuestKeys {
        GuestKeys { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret) }
    }

    /// A new guest: a random id (96 bits, so ids never collide, on one instance or many)
    /// and its credential.
    pub fn issue(&self) -> Option<(String, String)> {
        let bytes = crate::random::bytes::<12>()?;
        let user = format!("{GUEST_PREFIX}{}", data_encoding::HEXLOWER.encode(&bytes));
        let credential = self.credential(&user);
        Some((user, credential))
    }

    /// `USER.MAC`: the id, and its MAC in base64url.
    pub fn credential(&self, user: &str) -> String {
        let mac = ring::hmac::sign(&self.key, user.as_bytes());
        format!("{user}.{}", BASE64URL_NOPAD.encode(mac.as_ref()))
    }

    /// The guest id a credential proves, if this server's key signed it (checked in
    /// constant time by ring).
    pub fn verify(&self, credential: &str) -> Option<String> {
        let (user, mac) = credential.rsplit_once('.')?;
        if !user.starts_with(GUEST_PREFIX) || user.len() > 64 {
            return None;
        }
        let mac = BASE64URL_NOPAD.decode(mac.as_bytes()).ok()?;
        ring::hmac::verify(&self.key, user.as_bytes(), &mac).ok()?;
        Some(user.to_string())
    }
}

/// A guest credential offered at the upgrade: `?identity=`, else the cookie.
pub fn offered(query: &str, cookie: Option<&str>) -> Option<String> {
    crate::net::query::get(query, "identity").or_else(|| {
        cookie?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == IDENTITY_COOKIE)
            .map(|(_, v)| v.to_string())
    })
}

/// The identity key kept in `data_dir` (made on first start): 32 random bytes, hex.
pub fn key_from_data_dir(data_dir: &Path) -> Result<Vec<u8>, String> {
    let path = data_dir.join("identity.key");
    match std::fs::read_to_string(&path) {
        Ok(hex) => data_encoding::HEXLOWER
            .decode(hex.trim().as_bytes())
            .ok()
            .filter(|k| k.len() >= 32)
            .ok_or_else(|| format!("{} is not 64 hex digits; remove it to make a new key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
            let key = crate::random::bytes::<32>().ok_or("no random numbers (getrandom)")?;
            let hex = data_encoding::HEXLOWER.encode(&key);
            // create_new: two processes starting at once do not overwrite each other's key.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(mut f) => {
                    f.write_all(hex.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
                    Ok(key.to_vec())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => key_from_data_dir(data_dir),
                Err(e) => Err(format!("cannot write {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_prove_the_id_they_were_issued_for_and_nothing_else() {
        let keys = GuestKeys::new(b"0123456789abcdef0123456789abcdef");
        let (user, cred) = keys.issue().unwrap();
        assert!(user.starts_with(GUEST_PREFIX) && user.len() == GUEST_PREFIX.len() + 24);
        assert_eq!(keys.verify(&cred).as_deref(), Some(user.as_str()));
        let (other, _) = keys.issue().unwrap();
        assert_ne!(user, other);
        // Another id with this MAC; this id with another key's MAC; no MAC; garbage.
        let mac = cred.rsplit_once('.').unwrap().1;
        assert_eq!(keys.verify(&format!("{other}.{mac}")), None);
        let foreign = GuestKeys::new(b"another key, another deployment!!").credential(&user);
        assert_eq!(keys.verify(&foreign), None);
        assert_eq!(keys.verify(&user), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(keys.verify(&format!("{cred}x")), None);
        // Only guest ids: a credential can never stand for a JWT user.
        assert_eq!(keys.verify(&keys.credential("alice")), None);
        // Ids are at most 64 bytes, even correctly signed.
        let longest = format!("{GUEST_PREFIX}{}", "a".repeat(64 - GUEST_PREFIX.len()));
        assert_eq!(keys.verify(&keys.credential(&longest)).as_deref(), Some(longest.as_str()));
        assert_eq!(keys.verify(&keys.credential(&format!("{longest}a"))), None);
    }

    #[test]
    fn the_credential_is_found_in_the_url_or_the_cookie() {
        assert_eq!(offered("identity=a.b&x=1", Some("threadchat_identity=c.d")).as_deref(), Some("a.b"));
        assert_eq!(offered("", Some("x=1; threadchat_identity=c.d")).as_deref(), Some("c.d"));
        assert_eq!(offered("", Some("x=1")), None);
    }

    #[test]
    fn the_data_dir_key_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("threadchat-idkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = key_from_data_dir(&dir).unwrap();
        assert_eq!(key_from_data_dir(&dir).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("identity.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join("identity.key"), "short").unwrap();
        assert!(key_from_data_dir(&dir).unwrap_err().contains("64 hex digits"));
        // Unreadable (here: a directory in its place) is an error, never a new key.
        std::fs::remove_file(dir.join("identity.key")).unwrap();
        std::fs::create_dir(dir.join("identity.key")).unwrap();
        assert!(key_from_data_dir(&dir).unwrap_err().contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
