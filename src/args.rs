//! The command line as clap parses it: flags, env vars, defaults, `--help`. `config.rs`
//! turns [`ServeArgs`] into the validated `Config` the server runs with.

mod admin;
mod tools;

pub use admin::{AdminAction, AdminArgs, Whom};
pub use tools::{BackupArgs, BenchArgs, ExportArgs, ImportArgs, RestoreArgs, VerifyArgs};

use std::net::SocketAddr;
use std::path::PathBuf;

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

const CLIENT_EXIT_CODES: &str = "Exit status:\n  0  done (for tail: --count reached, or the server closed the connection)\n  1  could not connect, the upgrade was refused (HTTP status printed), the TLS certificate was not trusted, the server closed early, or it rejected the request\n  2  bad arguments\n  3  timed out (--timeout-secs)";

// Parsed once at start-up: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Connect to a chat URL, send one message, print its broadcast as JSON and exit.
    /// Against an /echo URL: send TEXT verbatim and print the echo.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Send(SendArgs),
    /// Connect to a chat URL and print every event received, one JSON object per line.
    #[command(after_help = CLIENT_EXIT_CODES)]
    Tail(TailArgs),
    /// Load generator: many simulated clients against any server that broadcasts text.
    Bench(BenchArgs),
    /// Copy the SQLite history consistently while a server runs on it (one read
    /// transaction, paced), and print what the copy holds as JSON.
    #[command(
        after_help = "Exit status:\n  0  copied\n  1  could not copy (no history there, the target exists, a disk error)\n  2  bad arguments"
    )]
    Backup(BackupArgs),
    /// Check a history file: SQLite's integrity check, the schema version, every room's
    /// numbering. Prints a JSON summary (or the problem, on stderr).
    #[command(
        after_help = "Exit status:\n  0  whole\n  1  damaged (integrity, or a hole in a room's numbering)\n  2  not a threadchat history (not SQLite, other tables, a newer schema)"
    )]
    Verify(VerifyArgs),
    /// Replace the SQLite history of a data directory with a backup (the server must be
    /// stopped; numbering then continues above the backup's), printing what it holds.
    #[command(
        after_help = "Exit status:\n  0  restored\n  1  refused (a server runs there, a history with messages there and no --force, a damaged file) or failed\n  2  bad arguments, or FILE is not a threadchat history"
    )]
    Restore(RestoreArgs),
    /// Moderate a running server over its HTTP API (kick, ban, mute, delete, announce,
    /// purge a user; list bans, mutes and the audit log), printing the answer as JSON.
    #[command(
        after_help = "Exit status:\n  0  done\n  1  could not connect, or the server refused (its status and error printed)\n  2  bad arguments\n  3  timed out (--timeout-secs)"
    )]
    Admin(AdminArgs),
    /// Print stored messages as JSON lines (room, seq, user, name, text, ts, id).
    Export(ExportArgs),
    /// Read JSON lines (as `export` prints them) into an empty history.
    Import(ImportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address for the HTTP server (chat page, API). Port 0 picks a free port.
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    pub http_addr: SocketAddr,

    /// Address for the WebSocket listener (/ws chat, /echo). Port 0 picks a free port.
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_WS_ADDR", default_value = "127.0.0.1:3001")]
    pub ws_addr: SocketAddr,

    /// Serve the page from this directory instead of the copy built into the binary.
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Largest WebSocket message a client may send; larger ones close the connection with 1009.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Seconds between heartbeat pings; a client that has not answered by the next ping is dropped.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_PING_INTERVAL_SECS", default_value_t = 30)]
    pub ping_interval_secs: u64,

    /// Most simultaneous WebSocket connections; further upgrades get HTTP 503.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,

    /// Most unsent bytes in all clients' queues together; past it the clients holding the
    /// most are closed with 1008 (slow consumer) until the total is back under 90 %.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_QUEUED_TOTAL", default_value_t = 256 * 1024 * 1024)]
    pub max_queued_total: usize,

    /// Most bytes queued for one client that is not reading; past it the client is closed with 1008.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_QUEUED_BYTES", default_value_t = 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Seconds a connection has to send a complete request (WebSocket upgrade or HTTP, head
    /// and body); also how long an idle keep-alive connection waits for its next request.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// WebSocket URL the page should use (behind a proxy); by default the page's own origin
    /// (`ws://HOST/ws`, from a validated Host header).
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_PUBLIC_WS_URL")]
    pub public_ws_url: Option<String>,

    /// Most HTTP requests being answered at once (page, API); more get HTTP 503.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_HTTP_REQUESTS", default_value_t = 256)]
    pub max_http_requests: usize,

    /// Most connections still sending a request head (new, or idle between keep-alive
    /// requests), on both ports together; past it the oldest of them is closed.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_HANDSHAKES", default_value_t = 1024)]
    pub max_handshakes: usize,

    /// Most such connections from one IP address; past it new ones from that address are
    /// closed at accept (its oldest idle keep-alive connection is closed first, if it has one).
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_HANDSHAKES_PER_IP", default_value_t = 16)]
    pub max_handshakes_per_ip: usize,

    /// Certificate chain (PEM) to serve https:// and wss:// on both ports; needs --tls-key.
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert.
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Threads answering HTTP requests.
    #[arg(help_heading = "Listening", long, env = "THREADCHAT_HTTP_THREADS", default_value_t = 4)]
    pub http_threads: usize,

    /// Shared secret clients must present at the upgrade (`?token=`, `Authorization: Bearer`,
    /// or a `threadchat_token` cookie); otherwise HTTP 401. Default: no authentication.
    #[arg(help_heading = "Authentication and access", long, env = "THREADCHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// HS256 secret: clients may present a JWT (same places as --token) signed with it;
    /// the user is its `sub` claim (required), the display name its `name` (else `sub`),
    /// reserved for that user for good.
    #[arg(help_heading = "Authentication and access", long, env = "THREADCHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Secret for the moderation API (`Authorization: Bearer SECRET` on `/api/admin/…`): every
    /// right, for scripts and `threadchat admin`. Without it (and without --jwt-secret, whose
    /// tokens may carry moderator roles) the moderation API does not exist (404).
    #[arg(help_heading = "Authentication and access", long, env = "THREADCHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Key that signs guest identities (at least 32 bytes; give every instance of a cluster
    /// the same). Default: with --redis, one kept in Redis; else DATA_DIR/identity.key.
    #[arg(
        help_heading = "Authentication and access",
        long,
        env = "THREADCHAT_IDENTITY_SECRET",
        hide_env_values = true
    )]
    pub identity_secret: Option<String>,

    /// Extra browser origin allowed to open WebSockets (exact match, repeatable). The
    /// server's own HTTP origins are always allowed; requests without Origin (CLI tools) too.
    #[arg(
        help_heading = "Authentication and access",
        long = "allow-origin",
        env = "THREADCHAT_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,

    /// A private room: only users whose JWT `rooms` claim names it may enter, read or post
    /// there (repeatable). A name, or a prefix ending in `*` (`team-*`).
    #[arg(
        help_heading = "Authentication and access",
        long = "private-room",
        env = "THREADCHAT_PRIVATE_ROOMS",
        value_delimiter = ','
    )]
    pub private_rooms: Vec<String>,

    /// Address of a reverse proxy (nginx…) in front of threadchat (repeatable). From it, the
    /// client's address is taken from `X-Forwarded-For` for per-IP limits and tickets.
    #[arg(
        help_heading = "Authentication and access",
        long = "trusted-proxy",
        env = "THREADCHAT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Most simultaneous WebSocket connections of one JWT user (its `sub`, else its name), from
    /// any address; more → HTTP 429 at the upgrade.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 8)]
    pub max_connections_per_user: usize,

    /// Most simultaneous WebSocket connections from one IP address; more → HTTP 503.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_CLIENTS_PER_IP", default_value_t = 64)]
    pub max_clients_per_ip: usize,

    /// WebSocket upgrades allowed per second from one IP (bursts of twice that); more → 429.
    #[arg(help_heading = "Rates", long, env = "THREADCHAT_UPGRADE_RATE", default_value_t = 10.0)]
    pub upgrade_rate: f64,

    /// Chat messages (frames on /ws) per second per client (bursts of twice that); over it
    /// a message gets an error reply, and a client that keeps flooding is closed with 1008.
    #[arg(help_heading = "Rates", long, env = "THREADCHAT_MESSAGE_RATE", default_value_t = 20.0)]
    pub message_rate: f64,

    /// Chat messages per second from one IP address, all its clients together (bursts of
    /// twice that); over it a message gets an error reply, as over --message-rate.
    #[arg(help_heading = "Rates", long, env = "THREADCHAT_MESSAGE_RATE_PER_IP", default_value_t = 100.0)]
    pub message_rate_per_ip: f64,

    /// MiB of history one IP address may read per second, through the history API and
    /// WebSocket resumes together (bursts of four times that); over it an HTTP page gets
    /// 429 and a resume is slowed down.
    #[arg(help_heading = "Rates", long, env = "THREADCHAT_HISTORY_READ_RATE_PER_IP", default_value_t = 4.0)]
    pub history_read_rate_per_ip: f64,

    /// Directory for the embedded history database (SQLite, `history.db`); created if missing.
    #[arg(help_heading = "Storage", long, env = "THREADCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Run as one of several instances sharing this Redis (ordered log, presence), e.g.
    /// redis://127.0.0.1:6379/0. Default: a single instance, no Redis.
    #[arg(help_heading = "Cluster", long, env = "THREADCHAT_REDIS_URL")]
    pub redis: Option<String>,

    /// Store history in Postgres instead, e.g. postgres://user:pass@host:5432/db
    #[arg(help_heading = "Storage", long, env = "THREADCHAT_DATABASE_URL")]
    pub database: Option<String>,

    /// `on`: every commit is flushed to disk before anything is acknowledged (survives power
    /// loss). `off`: commits reach the OS but are not fsynced (survives a crash or kill -9 of
    /// threadchat, not of the machine); faster on slow disks.
    #[arg(help_heading = "Storage", long, env = "THREADCHAT_SYNC_COMMIT", default_value = "on", value_parser = ["on", "off"])]
    pub sync_commit: String,

    /// Messages kept per room; older ones are pruned.
    #[arg(help_heading = "Storage", long, env = "THREADCHAT_HISTORY_LIMIT", default_value_t = 10_000)]
    pub history_limit: u64,

    /// Also prune messages older than this many seconds (default: no age limit).
    #[arg(help_heading = "Storage", long, env = "THREADCHAT_HISTORY_MAX_AGE_SECS")]
    pub history_max_age_secs: Option<u64>,

    /// Most rooms on this server (with members or history); creating more is refused.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: usize,

    /// Most rooms one connection may be in at once.
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_ROOMS_PER_CLIENT", default_value_t = 32)]
    pub max_rooms_per_client: usize,

    /// Most direct-message conversations on this server; one address may start at most
    /// 1 % of them. Past either, new conversations are refused (known ones go on).
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_MAX_CONVERSATIONS", default_value_t = 100_000)]
    pub max_conversations: usize,

    /// Broadcast join/leave notices only while the chat has at most this many members
    /// (each notice goes to every member; in a crowd they cost N² deliveries and are noise).
    #[arg(help_heading = "Limits", long, env = "THREADCHAT_JOIN_NOTICE_LIMIT", default_value_t = 1000)]
    pub join_notice_limit: usize,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Chat WebSocket URL, e.g. ws://127.0.0.1:3001/ws or wss://chat.example.org/ws
    pub url: String,
    /// Text of the message.
    pub text: String,
    /// Give up (exit 3) if the message has not come back within this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Send to this room (joined first if it is not `lobby`).
    #[arg(long, default_value = "lobby")]
    pub room: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Chat WebSocket URL, e.g. ws://127.0.0.1:3001/ws or wss://chat.example.org/ws
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
    /// Follow this room (joined first if it is not `lobby`); events of other rooms are
    /// not printed.
    #[arg(long, default_value = "lobby")]
    pub room: String,
    /// First replay the room's stored messages after this sequence number, then follow it
    /// live, with nothing lost or repeated in between (`?resume=ROOM:SEQ`).
    #[arg(long)]
    pub since: Option<u64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How `send` and `tail` connect: credentials, identity, name, certificates.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Take this display name first (exit 1 if another user holds or owns it).
    #[arg(long)]
    pub name: Option<String>,
    /// Token or JWT for a server that requires one (sent as `Authorization: Bearer`).
    #[arg(long, visible_alias = "jwt", env = "THREADCHAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Keep a guest identity in this file: presented if it exists (as the
    /// `threadchat_identity` cookie), written with the one the server gives if not, so every
    /// run is the same user (the same name and direct messages). A server that no longer
    /// knows it answers 401; delete the file to become a new guest.
    #[arg(long, env = "THREADCHAT_IDENTITY_FILE")]
    pub identity_file: Option<std::path::PathBuf>,
    /// With wss://: trust the certificates in this PEM file (a self-signed server's)
    /// instead of the system's certificate authorities.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}
