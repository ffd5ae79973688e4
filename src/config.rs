//! Command line and environment → one validated [`Config`], before anything starts.
//!
//! `Cli` is what clap parses (flags, env vars, defaults, `--help`); [`Config`] is what the
//! server runs with. Everything a flag can get wrong is rejected here with a one-line error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "threadchat",
    version,
    about = "A synchronous, thread-per-connection WebSocket chat server",
    long_about = "A synchronous, thread-per-connection WebSocket chat server.\n\n\
        With no subcommand, `threadchat` serves: a chat page and JSON API over HTTP, and the \
        chat (/ws) and echo (/echo) WebSocket endpoints, on the HTTP port and on a second \
        WebSocket-only port (--ws-addr, which answers HTTP too). On start it prints \
        `http listening on http://ADDR` and `ws listening on ws://ADDR` to stdout.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Connect to a chat URL, send one message, print its broadcast as JSON and exit.
    /// Against an /echo URL: send TEXT verbatim and print the echo.
    Send(SendArgs),
    /// Connect to a chat URL and print every event received, one JSON object per line.
    Tail(TailArgs),
    /// Load generator: many simulated clients against any server that broadcasts text.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// WebSocket URL that broadcasts every text message, e.g. ws://127.0.0.1:3001/ws
    pub url: String,
    /// Simulated clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How many of the clients send.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Total messages per second over all senders; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// With --rate 0: messages each sender keeps in flight (sent, not yet seen back).
    #[arg(long, default_value_t = 4)]
    pub window: u32,
    /// Seconds to measure (after connecting and the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Seconds allowed for all clients to connect.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout_secs: u64,
    /// Clients (counted from the last) that never read anything.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// Pad each message (its JSON) to about this many bytes.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Measure handshakes per second instead: each client connects, upgrades, drops, repeats.
    #[arg(long)]
    pub handshakes: bool,
    /// Measure what rooms cost instead: one client joins this many rooms, then posts to and
    /// leaves each (needs --server-pid, and a server with --max-rooms above it).
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// With --rooms: the server's HTTP address (HOST:PORT), to time `GET /api/rooms`.
    #[arg(long)]
    pub http: Option<String>,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Server process to measure CPU time and RSS of (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address for the HTTP server (chat page, API). Port 0 picks a free port.
    #[arg(long, env = "THREADCHAT_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    pub http_addr: SocketAddr,

    /// Address for the WebSocket listener (/ws chat, /echo). Port 0 picks a free port.
    #[arg(long, env = "THREADCHAT_WS_ADDR", default_value = "127.0.0.1:3001")]
    pub ws_addr: SocketAddr,

    /// Serve the page from this directory instead of the copy built into the binary.
    #[arg(long, env = "THREADCHAT_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Largest WebSocket message a client may send; larger ones close the connection with 1009.
    #[arg(long, env = "THREADCHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Seconds between heartbeat pings; a client that has not answered by the next ping is dropped.
    #[arg(long, env = "THREADCHAT_PING_INTERVAL_SECS", default_value_t = 30)]
    pub ping_interval_secs: u64,

    /// Most simultaneous WebSocket connections; further upgrades get HTTP 503.
    #[arg(long, env = "THREADCHAT_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,

    /// Most unsent bytes in all clients' queues together; past it the clients holding the
    /// most are closed with 1008 (slow consumer) until the total is back under 90 %.
    #[arg(long, env = "THREADCHAT_MAX_QUEUED_TOTAL", default_value_t = 256 * 1024 * 1024)]
    pub max_queued_total: usize,

    /// Most bytes queued for one client that is not reading; past it the client is closed with 1008.
    #[arg(long, env = "THREADCHAT_MAX_QUEUED_BYTES", default_value_t = 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Seconds a connection has to send a complete request (WebSocket upgrade or HTTP, head
    /// and body); also how long an idle keep-alive connection waits for its next request.
    #[arg(long, env = "THREADCHAT_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// WebSocket URL the page should use (behind a proxy); by default the page's own origin
    /// (`ws://HOST/ws`, from a validated Host header).
    #[arg(long, env = "THREADCHAT_PUBLIC_WS_URL")]
    pub public_ws_url: Option<String>,

    /// Most HTTP requests being answered at once (page, API); more get HTTP 503.
    #[arg(long, env = "THREADCHAT_MAX_HTTP_REQUESTS", default_value_t = 256)]
    pub max_http_requests: usize,

    /// Most connections still sending a request head (new, or idle between keep-alive
    /// requests), on both ports together; past it the oldest of them is closed.
    #[arg(long, env = "THREADCHAT_MAX_HANDSHAKES", default_value_t = 1024)]
    pub max_handshakes: usize,

    /// Most such connections from one IP address; past it new ones from that address are
    /// closed at accept (its oldest idle keep-alive connection is closed first, if it has one).
    #[arg(long, env = "THREADCHAT_MAX_HANDSHAKES_PER_IP", default_value_t = 16)]
    pub max_handshakes_per_ip: usize,

    /// Certificate chain (PEM) to serve https:// and wss:// on both ports; needs --tls-key.
    #[arg(long, env = "THREADCHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "THREADCHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Threads answering HTTP requests.
    #[arg(long, env = "THREADCHAT_HTTP_THREADS", default_value_t = 4)]
    pub http_threads: usize,

    /// Shared secret clients must present at the upgrade (`?token=`, `Authorization: Bearer`,
    /// or a `threadchat_token` cookie); otherwise HTTP 401. Default: no authentication.
    #[arg(long, env = "THREADCHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// HS256 secret: clients may present a JWT (same places as --token) signed with it;
    /// the display name comes from its `name` (or `sub`) claim and cannot be changed.
    #[arg(long, env = "THREADCHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Extra browser origin allowed to open WebSockets (exact match, repeatable). The
    /// server's own HTTP origins are always allowed; requests without Origin (CLI tools) too.
    #[arg(long = "allow-origin", env = "THREADCHAT_ALLOW_ORIGINS", value_delimiter = ',')]
    pub allow_origins: Vec<String>,

    /// Address of a reverse proxy (nginx…) in front of threadchat (repeatable). From it, the
    /// client's address is taken from `X-Forwarded-For` for per-IP limits and tickets.
    #[arg(long = "trusted-proxy", env = "THREADCHAT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Most simultaneous WebSocket connections of one JWT user (its `sub`, else its name), from
    /// any address; more → HTTP 429 at the upgrade.
    #[arg(long, env = "THREADCHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 8)]
    pub max_connections_per_user: usize,

    /// Most simultaneous WebSocket connections from one IP address; more → HTTP 503.
    #[arg(long, env = "THREADCHAT_MAX_CLIENTS_PER_IP", default_value_t = 64)]
    pub max_clients_per_ip: usize,

    /// WebSocket upgrades allowed per second from one IP (bursts of twice that); more → 429.
    #[arg(long, env = "THREADCHAT_UPGRADE_RATE", default_value_t = 10.0)]
    pub upgrade_rate: f64,

    /// Chat messages (frames on /ws) per second per client (bursts of twice that); over it
    /// a message gets an error reply, and a client that keeps flooding is closed with 1008.
    #[arg(long, env = "THREADCHAT_MESSAGE_RATE", default_value_t = 20.0)]
    pub message_rate: f64,

    /// Directory for the embedded history database (SQLite, `history.db`); created if missing.
    #[arg(long, env = "THREADCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Run as one of several instances sharing this Redis (ordered log, presence), e.g.
    /// redis://127.0.0.1:6379/0. Default: a single instance, no Redis.
    #[arg(long, env = "THREADCHAT_REDIS_URL")]
    pub redis: Option<String>,

    /// Store history in Postgres instead, e.g. postgres://user:pass@host:5432/db
    #[arg(long, env = "THREADCHAT_DATABASE_URL")]
    pub database: Option<String>,

    /// `on`: every commit is flushed to disk before anything is acknowledged (survives power
    /// loss). `off`: commits reach the OS but are not fsynced (survives a crash or kill -9 of
    /// threadchat, not of the machine); faster on slow disks.
    #[arg(long, env = "THREADCHAT_SYNC_COMMIT", default_value = "on", value_parser = ["on", "off"])]
    pub sync_commit: String,

    /// Messages kept per room; older ones are pruned.
    #[arg(long, env = "THREADCHAT_HISTORY_LIMIT", default_value_t = 10_000)]
    pub history_limit: u64,

    /// Also prune messages older than this many seconds (default: no age limit).
    #[arg(long, env = "THREADCHAT_HISTORY_MAX_AGE_SECS")]
    pub history_max_age_secs: Option<u64>,

    /// Most rooms on this server (with members or history); creating more is refused.
    #[arg(long, env = "THREADCHAT_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: usize,

    /// Most rooms one connection may be in at once.
    #[arg(long, env = "THREADCHAT_MAX_ROOMS_PER_CLIENT", default_value_t = 32)]
    pub max_rooms_per_client: usize,

    /// Broadcast join/leave notices only while the chat has at most this many members
    /// (each notice goes to every member; in a crowd they cost N² deliveries and are noise).
    #[arg(long, env = "THREADCHAT_JOIN_NOTICE_LIMIT", default_value_t = 1000)]
    pub join_notice_limit: usize,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Chat WebSocket URL, e.g. ws://127.0.0.1:3001/ws
    pub url: String,
    /// Text of the message.
    pub text: String,
    /// Give up (exit 3) if the message has not come back within this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Set this display name before sending.
    #[arg(long)]
    pub name: Option<String>,
    /// Token or JWT for a server that requires one (sent as `Authorization: Bearer`).
    #[arg(long, env = "THREADCHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Chat WebSocket URL, e.g. ws://127.0.0.1:3001/ws
    pub url: String,
    /// Exit 0 after printing this many events (default: run until closed).
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit 3 if `--count` events have not arrived within this many seconds.
    #[arg(long)]
    pub timeout_secs: Option<u64>,
    /// Print only events of this type (e.g. `message`). The welcome is never printed.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Token or JWT for a server that requires one (sent as `Authorization: Bearer`).
    #[arg(long, env = "THREADCHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

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
    pub allow_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub max_clients_per_ip: usize,
    /// WebSocket sessions of one JWT user at most.
    pub max_connections_per_user: usize,
    /// Upgrades per second per IP; bursts of twice that.
    pub upgrade_rate: f64,
    /// Chat frames per second per client; bursts of twice that.
    pub message_rate: f64,
    /// Test hook, not a flag: a chat message with exactly this text panics its client
    /// thread, so tests can check that a panic stays contained.
    #[doc(hidden)]
    pub panic_on_text: Option<String>,
    /// Test hook, not a flag: an HTTP request for exactly this path panics in its handler,
    /// so tests can check that the port survives it.
    #[doc(hidden)]
    pub panic_on_path: Option<String>,
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
            data_dir: PathBuf::from("./data"),
            database: None,
            redis: None,
            history_limit: 10_000,
            history_max_age: None,
            sync_commit: true,
            token: None,
            jwt_secret: None,
            allow_origins: vec![],
            trusted_proxies: vec![],
            max_clients_per_ip: 64,
            max_connections_per_user: 8,
            upgrade_rate: 10.0,
            message_rate: 20.0,
            panic_on_text: None,
            panic_on_path: None,
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
            data_dir: a.data_dir,
            database: a.database,
            redis: a.redis,
            history_limit: a.history_limit,
            history_max_age: a.history_max_age_secs.map(Duration::from_secs),
            sync_commit: a.sync_commit == "on",
            token: a.token,
            jwt_secret: a.jwt_secret,
            allow_origins: a.allow_origins,
            trusted_proxies: a.trusted_proxies,
            max_clients_per_ip: a.max_clients_per_ip,
            max_connections_per_user: a.max_connections_per_user,
            upgrade_rate: a.upgrade_rate,
            message_rate: a.message_rate,
            panic_on_text: None,
            panic_on_path: None,
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

    /// Checks every field; the error is one line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("--token must be at least 16 characters".into());
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return Err("--jwt-secret must be at least 32 bytes (HS256 wants a 256-bit key)".into());
        }
        if self.max_clients_per_ip == 0 {
            return Err("--max-clients-per-ip must be at least 1".into());
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
        if let Some(url) = &self.database
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("--database must be a postgres:// URL".into());
        }
        if let Some(url) = &self.redis
            && !(url.starts_with("redis://") || url.starts_with("unix://"))
        {
            return Err("--redis must be a redis:// URL".into());
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
