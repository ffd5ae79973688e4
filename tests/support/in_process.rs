//! Servers started in-process on free ports (`TestServer`), on SQLite or, for the
//! Postgres pass of `scripts/test.sh`, on a fresh Postgres database each.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
use super::*;
use threadchat::{Config, ServerHandle};

/// An in-process server on free ports with its own history database; dropping it shuts
/// it down (and removes the database unless it was given one).
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    _data: Option<TempDir>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with(|_| {})
    }

    pub fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data = TempDir::new();
        let dir = data.0.clone();
        let mut server = Self::in_dir(&dir, |c| {
            // THREADCHAT_TEST_DATABASE (set by scripts/test.sh for the Postgres pass) runs
            // every test against Postgres instead of SQLite.
            c.database = test_database();
            adjust(c)
        });
        server._data = Some(data);
        server
    }

    /// A server on an existing data directory (to test restarts).
    pub fn in_dir(dir: &std::path::Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        // Server logs show up for failing tests (RUST_LOG=info for more).
        let _ = env_logger::builder().is_test(true).try_init();
        // Tests flood on purpose and connect from one address: lift the rate limits and the
        // per-IP cap (the tests of those limits set them back).
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            message_rate: 1e6,
            message_rate_per_ip: 1e6,
            history_read_rate_per_ip: 1e6,
            upgrade_rate: 1e6,
            max_clients_per_ip: 10_000,
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let handle = ServerHandle::start(config).expect("server starts");
        TestServer { http: handle.http_addr(), ws: handle.ws_addr(), handle: Some(handle), _data: None }
    }

    pub fn chat_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    pub fn echo_url(&self) -> String {
        format!("ws://{}/echo", self.ws)
    }

    pub fn chat(&self) -> Client {
        Client::connect(&self.chat_url())
    }

    pub fn hub_len(&self) -> usize {
        self.handle.as_ref().map_or(0, |h| h.shared().chat.hub.len())
    }

    pub fn live_clients(&self) -> usize {
        self.handle.as_ref().map_or(0, |h| h.shared().live_clients())
    }

    /// Shuts down and returns how long it took.
    pub fn shutdown(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        start.elapsed()
    }
}

/// The Postgres server tests should use instead of SQLite, from `THREADCHAT_TEST_DATABASE`
/// (set by `scripts/test.sh` for its Postgres pass). Each test server gets a fresh database.
pub fn test_database() -> Option<String> {
    let base = std::env::var("THREADCHAT_TEST_DATABASE").ok()?;
    Some(fresh_pg_database(&base))
}

#[cfg(not(feature = "postgres"))]
pub fn fresh_pg_database(_: &str) -> String {
    panic!("THREADCHAT_TEST_DATABASE is set, but Postgres is a feature: cargo test --features postgres")
}

/// Creates a new, empty database on the server of `base` and returns its URL.
#[cfg(feature = "postgres")]
pub fn fresh_pg_database(base: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("t{}_{n}", std::process::id());
    let mut client = postgres::Client::connect(base, postgres::NoTls)
        .unwrap_or_else(|e| panic!("THREADCHAT_TEST_DATABASE={base} is set but Postgres is unreachable: {e}"));
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database URL ends with /dbname");
    format!("{prefix}/{name}")
}
