//! Starting and stopping a server: binds both listeners, starts every long-lived thread, and
//! returns a [`ServerHandle`] whose [`shutdown`](ServerHandle::shutdown) (or `Drop`) stops
//! them all. Tests start servers in-process through this; `main` does the same plus Ctrl-C.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::chat::Chat;
use crate::chat::heartbeat;
use crate::chat::hub::{CloseCode, Hub};
use crate::chat::sequencer;
use crate::chat::sequencer::queue::Sequencer;
use crate::config::Config;
use crate::conn::Outboxes;
use crate::conn::fanout::Fanout;
use crate::conn::flusher::Flusher;
use crate::conn::threads::Pool;
use crate::metrics::Metrics;
use crate::net::entry::accept;
use crate::net::entry::admission::{Admission, Limits};
use crate::net::http::tiny::Workers;
use crate::net::http::workers;
use crate::net::shared::Shared;
use crate::store;

/// How long shutdown waits for clients to answer the 1001 Close and for queued messages to
/// flush, before it cuts the remaining sockets.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// `--private-room` patterns are room names or `prefix*`: checked at start, a flag error.
pub fn check_private_rooms(config: &Config) -> Result<(), String> {
    for pattern in &config.private_rooms {
        crate::chat::protocol::validate_room_pattern(pattern).map_err(|e| format!("--private-room: {e}"))?;
    }
    Ok(())
}

/// Reads and checks `--tls-cert`/`--tls-key` (if given), so that `main` can report a bad
/// certificate as the flag error it is, before anything starts.
pub fn check_tls(config: &Config) -> Result<(), String> {
    match &config.tls {
        Some((cert, key)) => crate::net::entry::tls::server_config(cert, key).map(|_| ()),
        None => Ok(()),
    }
}

/// A running server. Dropping it shuts it down.
pub struct ServerHandle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    heartbeat_stop: crossbeam_channel::Sender<()>,
    stats_stop: crossbeam_channel::Sender<()>,
    stopped: bool,
}

/// Why the server could not start (as opposed to a client's connection failing).
#[derive(Debug)]
pub enum StartError {
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    Thread(std::io::Error),
    Store(store::StoreError),
    Tls(String),
    Redis(String),
    /// No randomness from the OS (`getrandom`).
    Random,
    /// The guest identity key could not be found or made.
    IdentityKey(String),
}

impl StartError {
    /// The process's exit status: 2 for what the operator must change before a retry can
    /// work (a history written by a newer version), 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Store(e) if e.0.starts_with(crate::store::NEWER_SCHEMA) => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { what, addr, source } => {
                write!(f, "cannot listen for {what} on {addr}: {source}")
            }
            StartError::Thread(e) => write!(f, "cannot start a server thread: {e}"),
            StartError::Store(e) => write!(f, "cannot open the history store: {e}"),
            StartError::Tls(e) => write!(f, "cannot set up TLS: {e}"),
            StartError::Redis(e) => write!(f, "cannot set up the Redis backplane: {e}"),
            StartError::Random => write!(f, "cannot read random bytes from the kernel (getrandom)"),
            StartError::IdentityKey(e) => write!(f, "guest identities: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl ServerHandle {
    /// Binds both listeners and starts the accept loops, HTTP workers, heartbeat and flusher.
    pub fn start(config: Config) -> Result<ServerHandle, StartError> {
        let ws_listener = bind_listener(config.ws_addr).map_err(|source| StartError::Bind {
            what: "WebSocket",
            addr: config.ws_addr,
            source,
        })?;
        let ws_addr = ws_listener.local_addr().map_err(StartError::Thread)?;
        let http_listener = bind_listener(config.http_addr).map_err(|source| StartError::Bind {
            what: "HTTP",
            addr: config.http_addr,
            source,
        })?;
        let http_addr = http_listener.local_addr().map_err(StartError::Thread)?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::net::entry::tls::server_config(cert, key).map_err(StartError::Tls)?),
            None => None,
        };
        let http = Arc::new(Workers::start().map_err(StartError::Thread)?);

        let store =
            store::open(config.database.as_deref(), &config.data_dir, config.sync_commit).map_err(StartError::Store)?;
        log::info!("history: {}", store.describe());
        let (flusher, flusher_thread) = Flusher::start().map_err(StartError::Thread)?;
        let (fanout, fanout_threads) = Fanout::start().map_err(StartError::Thread)?;
        let (closing_tx, closing_rx) = crossbeam_channel::unbounded();
        let (over_budget_tx, over_budget_rx) = crossbeam_channel::bounded(1);
        let queue_budget = Arc::new(crate::conn::unsent::QueueBudget::new(config.max_queued_total, over_budget_tx));
        let metrics = Arc::new(Metrics::default());
        let outbox_metrics = Arc::clone(&metrics);
        let limits = crate::chat::hub::RoomLimits {
            max_rooms: config.max_rooms,
            per_client: config.max_rooms_per_client,
            max_conversations: config.max_conversations,
        };
        let hub = Hub::new(closing_tx, Arc::clone(&metrics), config.join_notice_limit, limits);
        // Client ids must not repeat across restarts (a page would take an earlier client's
        // messages in the history for its own) nor across a cluster's instances: each
        // process numbers from its own random base (below 2^52, so JavaScript numbers stay
        // exact; the low 32 bits count, and name guests).
        let base = crate::random::u64().ok_or(StartError::Random)?;
        hub.set_id_base((base % (1 << 20)) << 32);
        let backplane: Option<Box<crate::chat::backplane::Backplane>> = match &config.redis {
            None => None,
            #[cfg(not(feature = "redis"))]
            Some(_) => return Err(StartError::Redis(crate::config::missing_feature("--redis", "redis"))),
            #[cfg(feature = "redis")]
            Some(url) => {
                let instance = format!("{:016x}", crate::random::u64().unwrap_or(base));
                Some(Box::new(
                    crate::chat::backplane::Backplane::new(url, instance, &config.hooks).map_err(StartError::Redis)?,
                ))
            }
        };
        // The key of guest identities (see net/access/identity.rs for where it lives and why).
        let identity_key = match (&config.identity_secret, &backplane) {
            (Some(secret), _) => secret.as_bytes().to_vec(),
            (None, Some(bp)) => {
                let fresh = crate::random::bytes::<32>().ok_or(StartError::Random)?;
                bp.identity_key(&fresh).map_err(StartError::IdentityKey)?
            }
            (None, None) => {
                crate::net::access::identity::key_from_data_dir(&config.data_dir).map_err(StartError::IdentityKey)?
            }
        };
        hub.names.load(&*store);
        #[cfg(feature = "redis")]
        if let Some(bp) = &backplane {
            hub.names.set_ledger(bp.ledger.clone());
        }
        let moderation = crate::chat::moderation::Moderation::load(&*store).map_err(StartError::Store)?;
        let chat = Arc::new(Chat {
            moderation,
            hub,
            backplane,
            metrics,
            store,
            sequencer: Sequencer::default(),
            fanout,
            outboxes: Outboxes {
                max_queued: config.max_queued_bytes,
                budget: queue_budget,
                flusher,
                metrics: Arc::clone(&outbox_metrics),
            },
            config: config.clone(),
        });
        let shared = Arc::new(Shared {
            chat: Arc::clone(&chat),
            ips: crate::net::access::per_ip::IpTable::default(),
            tickets: crate::net::access::tickets::Tickets::default(),
            guest_keys: crate::net::access::identity::GuestKeys::new(&identity_key),
            user_sessions: crate::net::access::auth::UserSessions::default(),
            admission: Arc::new(Admission::new(Limits {
                max_pending: config.max_handshakes,
                max_pending_per_ip: config.max_handshakes_per_ip,
                max_busy: config.max_http_requests,
                max_busy_per_ip: config.max_handshakes_per_ip,
                trusted_proxies: config.trusted_proxies.clone(),
            })),
            http: Arc::clone(&http),
            allowed_origins: own_origins(&[http_addr, ws_addr], tls.is_some(), &config.allow_origins),
            tls: tls.clone(),
            http_addr,
            ws_addr,
            shutting_down: AtomicBool::new(false),
            sessions: std::sync::atomic::AtomicUsize::new(0),
            live: Mutex::new(0),
            live_changed: Condvar::new(),
        });

        let heartbeat = heartbeat::spawn(Arc::clone(&chat), closing_rx, over_budget_rx).map_err(StartError::Thread)?;
        let heartbeat_stop = heartbeat.stop.clone();
        // Baseline before any client can arrive, so the first second's activity shows
        // in the first sample.
        chat.metrics.sample(0);
        let (stats_stop, stats_stop_rx) = crossbeam_channel::bounded::<()>(1);
        let stats_thread = spawn_stats(Arc::clone(&shared), stats_stop_rx).map_err(StartError::Thread)?;
        let mut threads = vec![flusher_thread, heartbeat.thread, stats_thread];
        threads.extend(sequencer::spawn(Arc::clone(&chat)).map_err(StartError::Thread)?);
        threads.extend(fanout_threads);
        for i in 0..config.http_threads {
            threads.push(workers::spawn_worker(i, Arc::clone(&http), Arc::clone(&shared)).map_err(StartError::Thread)?);
        }
        // One accept path for both ports; one pool of connection threads behind them.
        let pool = Pool::default();
        for (name, listener) in [("http-accept", http_listener), ("ws-accept", ws_listener)] {
            threads.push(accept::spawn(name, listener, Arc::clone(&shared), pool.clone()).map_err(StartError::Thread)?);
        }
        Ok(ServerHandle { shared, threads, heartbeat_stop, stats_stop, stopped: false })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.shared.http_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.shared.ws_addr
    }

    /// The shared state, for tests that inspect the hub.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful stop: stop accepting on both listeners, send every client Close 1001, give
    /// them `SHUTDOWN_GRACE` to answer and drain, cut the rest, and join every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let shared = &self.shared;
        shared.shutting_down.store(true, Ordering::Release);

        // Wake each blocking accept() with a connection to ourselves (the accept loop checks
        // the flag first thing after every accept). Same trick as tiny_http's own Drop.
        for addr in [shared.http_addr, shared.ws_addr] {
            let _ = TcpStream::connect_timeout(&crate::net::shared::connectable(addr), Duration::from_secs(1));
        }
        // Connections still reading a request, or being answered over HTTP: cut now.
        let unfinished = shared.admission.close_all();
        let count = shared.chat.hub.close_all(CloseCode::Away, "server shutting down");
        log::info!("shutting down: closing {count} WebSocket(s) and {unfinished} other connection(s)");

        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut live = shared.live.lock();
        while *live > 0 && !shared.live_changed.wait_until(&mut live, deadline).timed_out() {}
        if *live > 0 {
            log::warn!("{} client(s) did not close in time; cutting them", *live);
            drop(live);
            shared.chat.hub.terminate_all();
            let deadline = Instant::now() + Duration::from_secs(2);
            live = shared.live.lock();
            while *live > 0 && !shared.live_changed.wait_until(&mut live, deadline).timed_out() {}
        }
        drop(live);

        // Clients are gone: let the sequencer store what they submitted, then stop.
        shared.chat.sequencer.stop();
        if let Some(bp) = &shared.chat.backplane {
            bp.stop();
        }
        shared.chat.fanout.stop();
        shared.chat.outboxes.flusher.stop();
        // Each unblock releases one worker waiting in recv().
        shared.http.unblock(shared.chat.config.http_threads);
        let _ = self.heartbeat_stop.try_send(());
        let _ = self.stats_stop.try_send(());
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a server thread panicked during shutdown");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How often the per-IP table retires a generation (see `net::access::IpTable`).
const IP_GENERATION: u32 = 60;

/// The stats thread: once a second, samples the counters into the history that
/// `/api/stats` (and the stats page) shows; once a minute, retires a generation of the
/// per-IP table, off the connection path.
fn spawn_stats(shared: Arc<Shared>, stop: crossbeam_channel::Receiver<()>) -> std::io::Result<JoinHandle<()>> {
    crate::conn::threads::spawn_named("stats", 128 * 1024, move || {
        let mut ticks = 0u32;
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(crate::metrics::SAMPLE_INTERVAL)
        {
            ticks += 1;
            if ticks.is_multiple_of(IP_GENERATION) {
                shared.ips.rotate();
            }
            let chat = shared.chat.hub.snapshot().iter().filter(|c| c.kind().is_chat()).count();
            shared.chat.metrics.sample(chat);
        }
    })
}

/// Connections the kernel queues for `accept()`. std's `TcpListener::bind` asks for 128;
/// a burst of browsers reconnecting after a restart overflows that, and every dropped SYN
/// costs its client a 1 s retransmit. (The kernel caps it at `net.core.somaxconn`.)
const ACCEPT_BACKLOG: i32 = 1024;

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    crate::net::entry::accept::tune_listener(&socket)?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
}

/// For each listener (both serve the page): `http://localhost:PORT`,
/// `http://127.0.0.1:PORT`, `http://[::1]:PORT`, the bound address if it is a specific one
/// (all `https://` with TLS); and the `--allow-origin` extras. Compared exactly.
fn own_origins(listeners: &[SocketAddr], tls: bool, extra: &[String]) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    let mut origins = vec![];
    for addr in listeners {
        let port = addr.port();
        origins.push(format!("{scheme}://localhost:{port}"));
        origins.push(format!("{scheme}://127.0.0.1:{port}"));
        origins.push(format!("{scheme}://[::1]:{port}"));
        if !addr.ip().is_unspecified() {
            origins.push(format!("{scheme}://{addr}"));
        }
    }
    origins.extend(extra.iter().cloned());
    origins.sort();
    origins.dedup();
    origins
}
