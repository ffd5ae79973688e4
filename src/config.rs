//! Command line and environment → one validated [`Config`], before anything starts.
//!
//! `args.rs` is what clap parses (flags, env vars, defaults, `--help`); [`Config`] is what
//! the server runs with. Everything a flag can get wrong is rejected here with a one-line
//! error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::args::{BenchArgs, Cli, Command, ConnectArgs, SendArgs, ServeArgs, TailArgs};

/// Everything the server runs with, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    /// `None`: serve the page built into the binary.
    pub static_dir: Option<PathBuf>,
    /// Cap on one incoming WebSocket message (and frame). Over it: close 1009.
    pub max_message_bytes: usize,
    /// Heartbeat period. A client gets one full period to answer a ping.
    pub ping_interval: Duration,
    pub max_clients: usize,
    /// Per-client outgoing cap. Must fit the largest frame the server sends one client
    /// (an echo of a max-size message), so it is at least `max_message_bytes` + 16.
    pub max_queued_bytes: usize,
    /// Server-wide cap on unsent bytes (all outboxes together).
    pub max_queued_total: usize,
    pub handshake_timeout: Duration,
    pub public_ws_url: Option<String>,
    pub http_threads: usize,
    /// HTTP requests being answered at once; more get 503.
    pub max_http_requests: usize,
    /// Connections without a complete request head yet (both ports); past it the oldest closes.
    pub max_handshakes: usize,
    /// The same, per client address (trusted proxies exempt).
    pub max_handshakes_per_ip: usize,
    /// Certificate chain and key (PEM): TLS on both listeners.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Join/leave notices are broadcast only while the chat has at most this many members.
    pub join_notice_limit: usize,
    /// Rooms on the server at most, and per connection.
    pub max_rooms: usize,
    pub max_rooms_per_client: usize,
    pub max_conversations: usize,
    pub data_dir: PathBuf,
    /// `postgres://…`; `None`: SQLite in `data_dir`.
    pub database: Option<String>,
    /// `redis://…`: cluster mode through the Redis backplane.
    pub redis: Option<String>,
    pub history_limit: u64,
    pub history_max_age: Option<Duration>,
    /// fsync every commit (`--sync-commit on`).
    pub sync_commit: bool,
    pub token: Option<String>,
    pub jwt_secret: Option<String>,
    /// `--identity-secret`: the key of guest identities (see `net/access/identity.rs`).
    pub identity_secret: Option<String>,
    /// `--admin-token`: full rights over the moderation API.
    pub admin_token: Option<String>,
    pub allow_origins: Vec<String>,
    /// `--private-room`: rooms (or `prefix*`) only a JWT `rooms` claim opens.
    pub private_rooms: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub max_clients_per_ip: usize,
    /// WebSocket sessions of one JWT user at most.
    pub max_connections_per_user: usize,
    /// Upgrades per second per IP; bursts of twice that.
    pub upgrade_rate: f64,
    /// Chat frames per second per client; bursts of twice that.
    pub message_rate: f64,
    /// Chat frames per second from one IP address, all its clients together; bursts of
    /// twice that. Without it, one address's 64 clients could send 64 × `message_rate`.
    pub message_rate_per_ip: f64,
    /// MiB of history one IP address may read per second (HTTP pages and WebSocket
    /// resumes together); bursts of four times that.
    pub history_read_rate_per_ip: f64,
    /// Faults tests inject; never set from the command line.
    #[doc(hidden)]
    pub hooks: TestHooks,
}

/// Faults a test can inject to check what clients see when something breaks inside the
/// server (no flag sets them; the binary always runs with the defaults).
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct TestHooks {
    /// A chat message with exactly this text panics its client thread, so tests can check
    /// that a panic stays contained.
    pub panic_on_text: Option<String>,
    /// A batch holding a message with exactly this text fails to commit, as if the disk
    /// had failed, so tests can check what senders and others see.
    pub fail_store_on_text: Option<String>,
    /// An HTTP request for exactly this path panics in its handler, so tests can check
    /// that the port survives it.
    pub panic_on_path: Option<String>,
    /// The backplane's reader skips log entries with exactly this text, as if Redis had
    /// lost them after acknowledging the publish, so tests can check that the sender is
    /// answered all the same.
    pub lose_log_text: Option<String>,
    /// How long a published message may go unread from the log before its sender gets an
    /// error (30 s; tests shorten it).
    pub confirm_timeout: Duration,
}

/// Each hook is one named call at the place it injects its fault, so the paths a reader
/// follows stay about the server: nothing sets a hook but a test, through `Config` in Rust.
impl TestHooks {
    /// Panics if `text` is the injected one (a client's thread; see `panic_on_text`).
    pub fn panic_on_text(&self, text: &str) {
        if self.panic_on_text.as_deref() == Some(text) {
            panic!("injected panic on {text:?} (test hook)");
        }
    }

    /// Panics if `path` is the injected one (an HTTP handler; see `panic_on_path`).
    pub fn panic_on_path(&self, path: &str) {
        if self.panic_on_path.as_deref() == Some(path) {
            panic!("injected panic on {path} (test hook)");
        }
    }

    /// Whether a batch with these texts is to fail its commit (see `fail_store_on_text`).
    pub fn fails_commit<'t>(&self, mut texts: impl Iterator<Item = &'t str>) -> bool {
        self.fail_store_on_text.as_deref().is_some_and(|t| texts.any(|x| x == t))
    }
}

impl Default for TestHooks {
    fn default() -> Self {
        TestHooks {
            panic_on_text: None,
            fail_store_on_text: None,
            panic_on_path: None,
            lose_log_text: None,
            confirm_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Config {
    /// The documented defaults, but on free ports: what tests start from.
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ws_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            static_dir: None,
            max_message_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(30),
            max_clients: 10_000,
            max_queued_bytes: 1024 * 1024,
            max_queued_total: 256 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            public_ws_url: None,
            http_threads: 4,
            max_http_requests: 256,
            max_handshakes: 1024,
            max_handshakes_per_ip: 16,
            tls: None,
            join_notice_limit: 1000,
            max_rooms: 1000,
            max_rooms_per_client: 32,
            max_conversations: 100_000,
            data_dir: PathBuf::from("./data"),
            database: None,
            redis: None,
            history_limit: 10_000,
            history_max_age: None,
            sync_commit: true,
            token: None,
            jwt_secret: None,
            identity_secret: None,
            admin_token: None,
            allow_origins: vec![],
            private_rooms: vec![],
            trusted_proxies: vec![],
            max_clients_per_ip: 64,
            max_connections_per_user: 8,
            upgrade_rate: 10.0,
            message_rate: 20.0,
            message_rate_per_ip: 100.0,
            history_read_rate_per_ip: 4.0,
            hooks: TestHooks::default(),
        }
    }
}

impl TryFrom<ServeArgs> for Config {
    type Error = String;

    fn try_from(a: ServeArgs) -> Result<Config, String> {
        let config = Config {
            http_addr: a.http_addr,
            ws_addr: a.ws_addr,
            static_dir: a.static_dir,
            max_message_bytes: a.max_message_bytes,
            ping_interval: Duration::from_secs(a.ping_interval_secs),
            max_clients: a.max_clients,
            max_queued_bytes: a.max_queued_bytes,
            max_queued_total: a.max_queued_total,
            handshake_timeout: Duration::from_secs(a.handshake_timeout_secs),
            public_ws_url: a.public_ws_url,
            http_threads: a.http_threads,
            max_http_requests: a.max_http_requests,
            max_handshakes: a.max_handshakes,
            max_handshakes_per_ip: a.max_handshakes_per_ip,
            tls: a.tls_cert.zip(a.tls_key),
            join_notice_limit: a.join_notice_limit,
            max_rooms: a.max_rooms,
            max_rooms_per_client: a.max_rooms_per_client,
            max_conversations: a.max_conversations,
            data_dir: a.data_dir,
            database: a.database,
            redis: a.redis,
            history_limit: a.history_limit,
            history_max_age: a.history_max_age_secs.map(Duration::from_secs),
            sync_commit: a.sync_commit == "on",
            token: a.token,
            jwt_secret: a.jwt_secret,
            identity_secret: a.identity_secret,
            admin_token: a.admin_token,
            allow_origins: a.allow_origins,
            private_rooms: a.private_rooms,
            trusted_proxies: a.trusted_proxies,
            max_clients_per_ip: a.max_clients_per_ip,
            max_connections_per_user: a.max_connections_per_user,
            upgrade_rate: a.upgrade_rate,
            message_rate: a.message_rate,
            message_rate_per_ip: a.message_rate_per_ip,
            history_read_rate_per_ip: a.history_read_rate_per_ip,
            hooks: TestHooks::default(),
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Whether clients must authenticate (token or JWT).
    pub fn auth_required(&self) -> bool {
        self.token.is_some() || self.jwt_secret.is_some()
    }

    /// Whether the moderation API exists: an admin token, or JWTs that may carry roles.
    pub fn moderation_enabled(&self) -> bool {
        self.admin_token.is_some() || self.jwt_secret.is_some()
    }

    /// Checks every field; the error is one line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("--token must be at least 16 characters".into());
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return Err("--jwt-secret must be at least 32 bytes (HS256 wants a 256-bit key)".into());
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("--admin-token must be at least 16 characters".into());
        }
        if self.identity_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return Err("--identity-secret must be at least 32 bytes".into());
        }
        if self.max_clients_per_ip == 0 {
            return Err("--max-clients-per-ip must be at least 1".into());
        }
        if self.max_conversations == 0 {
            return Err("--max-conversations must be at least 1".into());
        }
        if self.max_rooms == 0 || self.max_rooms_per_client == 0 {
            return Err("--max-rooms and --max-rooms-per-client must be at least 1".into());
        }
        if self.max_connections_per_user == 0 {
            return Err("--max-connections-per-user must be at least 1".into());
        }
        if !(self.upgrade_rate > 0.0 && self.upgrade_rate.is_finite()) {
            return Err("--upgrade-rate must be a positive number".into());
        }
        if !(self.message_rate > 0.0 && self.message_rate.is_finite()) {
            return Err("--message-rate must be a positive number".into());
        }
        if !(self.message_rate_per_ip > 0.0 && self.message_rate_per_ip.is_finite()) {
            return Err("--message-rate-per-ip must be a positive number".into());
        }
        if !(self.history_read_rate_per_ip > 0.0 && self.history_read_rate_per_ip.is_finite()) {
            return Err("--history-read-rate-per-ip must be a positive number".into());
        }
        if let Some(o) = self
            .allow_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return Err(format!(
                "--allow-origin {o:?} must be an origin like https://chat.example.org (scheme, host, optional port)"
            ));
        }
        if self.history_limit == 0 {
            return Err("--history-limit must be at least 1".into());
        }
        if let Some(url) = &self.database {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err("--database must be a postgres:// URL".into());
            }
            if !cfg!(feature = "postgres") {
                return Err(missing_feature("--database", "postgres"));
            }
        }
        if let Some(url) = &self.redis {
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                return Err("--redis must be a redis:// URL".into());
            }
            if !cfg!(feature = "redis") {
                return Err(missing_feature("--redis", "redis"));
            }
        }
        if !(128..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err("--max-message-bytes must be between 128 and 67108864".into());
        }
        if !(1..=3600).contains(&self.ping_interval.as_secs()) {
            return Err("--ping-interval-secs must be between 1 and 3600".into());
        }
        if !(1..=1_000_000).contains(&self.max_clients) {
            return Err("--max-clients must be between 1 and 1000000".into());
        }
        if self.max_queued_bytes < self.max_message_bytes + 16 {
            return Err(format!(
                "--max-queued-bytes must be at least --max-message-bytes + 16 ({})",
                self.max_message_bytes + 16
            ));
        }
        if self.max_queued_total < self.max_queued_bytes {
            return Err("--max-queued-total must be at least --max-queued-bytes".into());
        }
        if !(1..=300).contains(&self.handshake_timeout.as_secs()) {
            return Err("--handshake-timeout-secs must be between 1 and 300".into());
        }
        if !(1..=256).contains(&self.http_threads) {
            return Err("--http-threads must be between 1 and 256".into());
        }
        if !(1..=100_000).contains(&self.max_http_requests) {
            return Err("--max-http-requests must be between 1 and 100000".into());
        }
        if !(1..=100_000).contains(&self.max_handshakes) {
            return Err("--max-handshakes must be between 1 and 100000".into());
        }
        if !(1..=self.max_handshakes).contains(&self.max_handshakes_per_ip) {
            return Err("--max-handshakes-per-ip must be between 1 and --max-handshakes".into());
        }
        if let Some(url) = &self.public_ws_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err("--public-ws-url must start with ws:// or wss://".into());
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(format!("--static-dir {} is not a directory", dir.display()));
        }
        Ok(())
    }
}

/// The error for a flag whose backend this build left out (see `[features]` in Cargo.toml).
pub fn missing_feature(flag: &str, feature: &str) -> String {
    format!(
        "{flag} needs the `{feature}` feature, which this build leaves out: `cargo run --features {feature} -- …` (or --all-features)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("threadchat").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(cli.serve)
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.http_addr.port(), 3000);
        assert_eq!(c.ws_addr.port(), 3001);
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        Config::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_with_the_flag_name() {
        assert!(parse(&["--max-message-bytes", "10"]).unwrap_err().contains("--max-message-bytes"));
        assert!(parse(&["--ping-interval-secs", "0"]).unwrap_err().contains("--ping-interval-secs"));
        assert!(parse(&["--max-clients", "0"]).unwrap_err().contains("--max-clients"));
        assert!(parse(&["--max-queued-bytes", "100"]).unwrap_err().contains("--max-queued-bytes"));
        assert!(parse(&["--public-ws-url", "http://x"]).unwrap_err().contains("--public-ws-url"));
        assert!(parse(&["--ws-addr", "nope"]).is_err());
        // HS256 wants a 256-bit key: 31 bytes is refused, 32 accepted.
        assert!(parse(&["--jwt-secret", &"k".repeat(31)]).unwrap_err().contains("--jwt-secret"));
        assert!(parse(&["--jwt-secret", &"k".repeat(32)]).is_ok());
        assert!(parse(&["--token", &"t".repeat(15)]).unwrap_err().contains("--token"));
    }

    /// In a build without a backend's feature, its flag is refused by name (and the
    /// default build's binary is checked the same way by scripts/test.sh).
    #[test]
    fn backends_are_accepted_exactly_when_built_in() {
        let redis = parse(&["--redis", "redis://127.0.0.1/0"]);
        assert_eq!(redis.is_ok(), cfg!(feature = "redis"), "{redis:?}");
        let pg = parse(&["--database", "postgres://127.0.0.1/x"]);
        assert_eq!(pg.is_ok(), cfg!(feature = "postgres"), "{pg:?}");
        if let Err(e) = redis {
            assert!(e.contains("--features redis"), "{e}");
        }
        assert!(parse(&["--redis", "http://x"]).unwrap_err().contains("redis:// URL"));
    }
}
