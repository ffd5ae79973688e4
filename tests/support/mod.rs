//! Shared test helpers, by what they start: servers in-process (`in_process`), the real
//! binary (`binary`), Redis (`redis`), WebSocket clients (`ws`) and raw HTTP (`http`).
//! Every read has a timeout ([`WAIT`]), so a hang fails fast.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

mod binary;
mod http;
mod in_process;
#[cfg(feature = "redis")]
mod redis;
mod ws;

pub use binary::*;
pub use http::*;
pub use in_process::*;
#[cfg(feature = "redis")]
pub use redis::*;
pub use ws::*;

/// Default time any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("threadchat-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` every 10 ms until it holds or `WAIT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HS256 JWT with these claims, signed with `secret`, as any JWT library makes one
/// (RFC 7519: base64url without padding, HMAC-SHA256 over `header.payload`).
pub fn jwt(secret: &str, claims: Value) -> String {
    let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
    let signed = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("{signed}.{}", b64(ring::hmac::sign(&key, signed.as_bytes()).as_ref()))
}
