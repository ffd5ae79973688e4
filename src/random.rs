//! Randomness from the kernel's CSPRNG, for ids and keys.

/// `N` random bytes, by the `getrandom` system call (ring's `SystemRandom`). Not by opening
/// `/dev/urandom`: that takes a file descriptor, and a guest's id is drawn exactly when the
/// server may have none left (CI caught a `503` on an upgrade in tests/entrance.rs's
/// fd-exhaustion test).
pub fn bytes<const N: usize>() -> Option<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut buf).ok()?;
    Some(buf)
}

/// 64 random bits.
pub fn u64() -> Option<u64> {
    bytes::<8>().map(u64::from_le_bytes)
}
