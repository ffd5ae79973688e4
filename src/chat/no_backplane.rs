//! The backplane of a build without the `redis` feature: a type with no values. `--redis`
//! is refused when the config is checked, so `Chat::backplane` is always `None`, and these
//! methods, which the compiler knows can never be called, keep one code path for readiness,
//! metrics and shutdown in both builds.

pub enum Backplane {}

impl Backplane {
    pub fn ready(&self) -> Result<(), &'static str> {
        match *self {}
    }

    pub fn pending(&self) -> usize {
        match *self {}
    }

    pub fn stop(&self) {
        match *self {}
    }

    pub fn identity_key(&self, _fresh: &[u8]) -> Result<Vec<u8>, String> {
        match *self {}
    }

    pub fn publish_typing(&self, _room: &str, _id: u64, _user: &str, _name: &str, _expires_ms: u64) {
        match *self {}
    }

    pub fn publish_moderation(&self, _json: &str) {
        match *self {}
    }

    pub fn instance_name(&self) -> &str {
        match *self {}
    }
}
