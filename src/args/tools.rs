//! The flags of the tools that are not the server: the history's data tools (`backup`,
//! `restore`, `verify`, `export`, `import`) and the load generator (`bench`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The data directory to restore into.
    #[arg(long, env = "THREADCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Replace a history that holds messages.
    #[arg(long)]
    pub force: bool,
    /// The backup to restore (`threadchat backup`'s output).
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, env = "THREADCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `postgres://…`: export from Postgres instead.
    #[arg(long, env = "THREADCHAT_DATABASE_URL")]
    pub database: Option<String>,
    /// Only this room (or conversation key).
    #[arg(long)]
    pub room: Option<String>,
    /// Only this user's messages (a JWT `sub`, or a guest id).
    #[arg(long)]
    pub user: Option<String>,
    /// Only messages at or after this Unix time, in seconds.
    #[arg(long)]
    pub since: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[arg(long, env = "THREADCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `postgres://…`: import into Postgres instead.
    #[arg(long, env = "THREADCHAT_DATABASE_URL")]
    pub database: Option<String>,
    /// JSON lines to read (`-`: standard input).
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The server's data directory (where `history.db` is).
    #[arg(long, env = "THREADCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Write the copy at most this fast, in MiB per second (a faster copy makes the
    /// server's commits wait for the disk).
    #[arg(long, default_value_t = 64)]
    pub max_mib_per_sec: u64,
    /// Where to write the copy (must not exist).
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A history file (`history.db`, or a backup of it).
    pub file: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// WebSocket URL that broadcasts every text message, e.g. ws://127.0.0.1:3001/ws.
    /// Several URLs (instances of one cluster): client i connects to URL i mod N, and
    /// deliveries between instances are reported apart.
    #[arg(required = true, num_args = 1..)]
    pub urls: Vec<String>,
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
    /// The reconnect storm instead: --clients connect, one more posts at --rate
    /// throughout, then all the others are dropped at once and reconnect together after
    /// --storm-gap-ms. Prints how long until all were back (and, with --resume, had every
    /// message they missed) and the server's peak threads and RSS, as JSON.
    #[arg(long)]
    pub storm: bool,
    /// With --storm: how long the dropped clients stay away, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub storm_gap_ms: u64,
    /// With --storm: reconnect with `?resume=lobby:SEQ` (threadchat) and wait for every
    /// missed message.
    #[arg(long)]
    pub resume: bool,
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
    /// Server process to measure CPU time and RSS of (from /proc); repeat it for a
    /// cluster's instances (their CPU and RSS are summed).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// A Redis server's process, to report its CPU beside the servers'.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
