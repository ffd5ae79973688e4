//! Counters for `/metrics` (Prometheus text format) and the per-second history behind
//! `/api/stats` and the live stats page.
//!
//! Counters are relaxed atomics bumped where things happen: one atomic add per broadcast,
//! per received frame and per `sendmsg`, never per byte. The `stats` thread samples them
//! once a second into a five-minute ring buffer.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// Samples kept for `/api/stats`: five minutes at one per second.
pub const HISTORY_LEN: usize = 300;
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection ended; counted once per connection (the first reason recorded wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Disconnect {
    /// The client sent a Close frame.
    ClientClose = 1,
    /// The TCP connection dropped without a Close (EOF or reset).
    Gone = 2,
    /// No pong by the next heartbeat round.
    Heartbeat = 3,
    /// Outgoing queue over `--max-queued-bytes` (1008).
    SlowConsumer = 4,
    /// Protocol violation (1002).
    Protocol = 5,
    /// Message over `--max-message-bytes` (1009).
    TooBig = 6,
    /// Invalid UTF-8 (1007).
    InvalidUtf8 = 7,
    /// Server shutdown (1001).
    Shutdown = 8,
    /// Anything else (1011, failed writes).
    Error = 9,
    /// Kept sending over `--message-rate` (1008).
    RateLimit = 10,
    /// Kicked or banned by a moderator (4003).
    Moderator = 11,
}

const DISCONNECT_NAMES: [&str; 12] = [
    "",
    "client_close",
    "gone",
    "heartbeat",
    "slow_consumer",
    "protocol_error",
    "too_big",
    "invalid_utf8",
    "shutdown",
    "error",
    "rate_limit",
    "moderator",
];

impl Disconnect {
    pub fn from_u8(v: u8) -> Option<Disconnect> {
        use Disconnect::*;
        Some(match v {
            1 => ClientClose,
            2 => Gone,
            3 => Heartbeat,
            4 => SlowConsumer,
            5 => Protocol,
            6 => TooBig,
            7 => InvalidUtf8,
            8 => Shutdown,
            9 => Error,
            10 => RateLimit,
            11 => Moderator,
            _ => return None,
        })
    }
}

/// Why a connection or request was refused, at any entrance (accept, request head,
/// WebSocket upgrade, HTTP API); the label of `threadchat_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// Missing or wrong credentials (401).
    Auth = 0,
    /// A browser page from a foreign origin (403).
    Origin = 1,
    /// Over a per-address or per-client rate (429).
    Rate = 2,
    /// Over a connection, request or handshake cap, or shutting down (503; closed at accept).
    Capacity = 3,
    /// The request was not completed in time (408, or closed).
    Timeout = 4,
    /// Malformed, too large, or a kind of request we do not take (400, 411, 413, 415, 417, 431).
    BadRequest = 5,
    /// No such WebSocket endpoint (404 at an upgrade).
    NotFound = 6,
}

const REFUSAL_NAMES: [&str; 7] = ["auth", "origin", "rate", "capacity", "timeout", "bad_request", "not_found"];

impl Refusal {
    /// The reason behind a refusal status this server sends.
    pub fn from_status(status: u16) -> Refusal {
        match status {
            401 => Refusal::Auth,
            403 => Refusal::Origin,
            429 => Refusal::Rate,
            408 => Refusal::Timeout,
            404 => Refusal::NotFound,
            503 => Refusal::Capacity,
            _ => Refusal::BadRequest,
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Chat messages accepted and broadcast.
    pub messages_in: AtomicU64,
    /// Text and binary frames received (chat and echo).
    pub frames_in: AtomicU64,
    /// Payload bytes of those frames.
    pub bytes_in: AtomicU64,
    /// Bytes written to client sockets (frames, handshakes, everything).
    pub bytes_out: AtomicU64,
    /// Broadcast events (messages, joins, leaves, renames).
    pub broadcasts: AtomicU64,
    /// Frames queued to a client by a broadcast: one broadcast to N clients is N deliveries.
    pub deliveries: AtomicU64,
    /// `{"type":"error"}` replies.
    pub error_replies: AtomicU64,
    /// Completed upgrades.
    pub connections: AtomicU64,
    disconnects: [AtomicU64; DISCONNECT_NAMES.len()],
    /// History store: committed batches, their total time (µs) and messages; failures.
    store_commits: AtomicU64,
    store_commit_micros: AtomicU64,
    store_messages: AtomicU64,
    store_errors: AtomicU64,
    /// Refusals by [`Refusal`].
    rejections: [AtomicU64; 7],
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    last: Option<(Instant, u64, u64)>,
}

/// One second of activity, as the stats page plots it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Unix time, ms.
    pub t: u64,
    pub clients: usize,
    pub messages_per_sec: f64,
    pub deliveries_per_sec: f64,
}

/// Gauges that live elsewhere (the hub knows them); passed in when rendering.
pub struct Gauges {
    pub chat_clients: usize,
    pub echo_clients: usize,
    /// Connections without a complete request head yet (both ports).
    pub handshaking: usize,
    /// HTTP requests being answered.
    pub http_requests: usize,
    pub client_threads: usize,
    pub queued_bytes: usize,
    /// (room, members) for every room with members.
    pub rooms: Vec<(String, usize)>,
    /// With `--redis`: (connected and caught up, messages published but not yet read back).
    pub backplane: Option<(bool, usize)>,
    /// Moderation actions by kind (counters kept by the chat's moderation).
    pub moderation: Vec<(&'static str, u64)>,
}

impl Metrics {
    pub fn disconnected(&self, why: Disconnect) {
        self.disconnects[why as usize].fetch_add(1, Relaxed);
    }

    /// A refused connection, upgrade or request.
    pub fn rejected(&self, why: Refusal) {
        self.rejections[why as usize].fetch_add(1, Relaxed);
    }

    pub fn store_committed(&self, took: Duration, messages: usize) {
        self.store_commits.fetch_add(1, Relaxed);
        self.store_commit_micros.fetch_add(took.as_micros() as u64, Relaxed);
        self.store_messages.fetch_add(messages as u64, Relaxed);
    }

    pub fn store_failed(&self) {
        self.store_errors.fetch_add(1, Relaxed);
    }

    /// Called once a second by the stats thread.
    pub fn sample(&self, clients: usize) {
        let now = Instant::now();
        let messages = self.messages_in.load(Relaxed);
        let deliveries = self.deliveries.load(Relaxed);
        let mut h = self.history.lock();
        if let Some((then, m0, d0)) = h.last {
            let secs = now.duration_since(then).as_secs_f64().max(1e-3);
            let sample = Sample {
                t: crate::clock::now_ms(),
                clients,
                messages_per_sec: (messages - m0) as f64 / secs,
                deliveries_per_sec: (deliveries - d0) as f64 / secs,
            };
            if h.samples.len() == HISTORY_LEN {
                h.samples.pop_front();
            }
            h.samples.push_back(sample);
        }
        h.last = Some((now, messages, deliveries));
    }

    pub fn history(&self) -> Vec<Sample> {
        self.history.lock().samples.iter().copied().collect()
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP threadchat_{name} {help}");
            let _ = writeln!(out, "# TYPE threadchat_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "threadchat_{name}{labels} {value}");
            }
        };
        metric(
            "clients",
            "gauge",
            "WebSocket sessions by endpoint, and connections still sending a request head (handshake).",
            &[
                ("{endpoint=\"chat\"}", g.chat_clients as u64),
                ("{endpoint=\"echo\"}", g.echo_clients as u64),
                ("{endpoint=\"handshake\"}", g.handshaking as u64),
            ],
        );
        metric("client_threads", "gauge", "Threads serving a connection.", &[("", g.client_threads as u64)]);
        metric("http_requests", "gauge", "HTTP requests being answered.", &[("", g.http_requests as u64)]);
        metric("queued_bytes", "gauge", "Bytes waiting in client outboxes.", &[("", g.queued_bytes as u64)]);
        if let Some((ready, pending)) = g.backplane {
            metric(
                "backplane_ready",
                "gauge",
                "1 while the Redis backplane is connected and caught up.",
                &[("", u64::from(ready))],
            );
            metric(
                "backplane_pending",
                "gauge",
                "Messages published, not yet read back from the log.",
                &[("", pending as u64)],
            );
        }
        metric(
            "connections_total",
            "counter",
            "Completed WebSocket upgrades.",
            &[("", self.connections.load(Relaxed))],
        );
        metric(
            "messages_received_total",
            "counter",
            "Chat messages accepted and broadcast.",
            &[("", self.messages_in.load(Relaxed))],
        );
        metric(
            "frames_received_total",
            "counter",
            "Text and binary frames received.",
            &[("", self.frames_in.load(Relaxed))],
        );
        metric(
            "bytes_received_total",
            "counter",
            "Payload bytes of received frames.",
            &[("", self.bytes_in.load(Relaxed))],
        );
        metric(
            "bytes_sent_total",
            "counter",
            "Bytes written to client sockets.",
            &[("", self.bytes_out.load(Relaxed))],
        );
        metric(
            "broadcasts_total",
            "counter",
            "Broadcast events (messages, joins, leaves, renames).",
            &[("", self.broadcasts.load(Relaxed))],
        );
        metric(
            "deliveries_total",
            "counter",
            "Frames queued to clients by broadcasts.",
            &[("", self.deliveries.load(Relaxed))],
        );
        metric(
            "error_replies_total",
            "counter",
            "Error replies sent to clients.",
            &[("", self.error_replies.load(Relaxed))],
        );
        let disconnects: Vec<(String, u64)> = (1..DISCONNECT_NAMES.len())
            .map(|i| (format!("{{reason=\"{}\"}}", DISCONNECT_NAMES[i]), self.disconnects[i].load(Relaxed)))
            .collect();
        let disconnects: Vec<(&str, u64)> = disconnects.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("disconnects_total", "counter", "Connections ended, by reason.", &disconnects);
        let rejections: Vec<(String, u64)> = REFUSAL_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (format!("{{reason=\"{name}\"}}"), self.rejections[i].load(Relaxed)))
            .collect();
        let rejections: Vec<(&str, u64)> = rejections.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "store_messages_total",
            "counter",
            "Messages committed to the history store.",
            &[("", self.store_messages.load(Relaxed))],
        );
        metric(
            "store_errors_total",
            "counter",
            "Failed history store commits.",
            &[("", self.store_errors.load(Relaxed))],
        );
        let rooms: Vec<(String, u64)> = g.rooms.iter().map(|(r, n)| (format!("{{room=\"{r}\"}}"), *n as u64)).collect();
        let rooms: Vec<(&str, u64)> = rooms.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("room_members", "gauge", "Members per room (distinct users); private rooms are left out.", &rooms);
        metric("refusals_total", "counter", "Refused connections, upgrades and requests, by reason.", &rejections);
        let actions: Vec<(String, u64)> =
            g.moderation.iter().map(|(a, n)| (format!("{{action=\"{a}\"}}"), *n)).collect();
        let actions: Vec<(&str, u64)> = actions.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "moderation_actions_total",
            "counter",
            "Moderation actions carried out here, by kind (\"refused\": requests refused).",
            &actions,
        );
        let _ = writeln!(
            out,
            "# HELP threadchat_store_commit_seconds Time to commit a batch of messages to the history store."
        );
        let _ = writeln!(out, "# TYPE threadchat_store_commit_seconds summary");
        let _ = writeln!(
            out,
            "threadchat_store_commit_seconds_sum {:.6}",
            self.store_commit_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "threadchat_store_commit_seconds_count {}", self.store_commits.load(Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.messages_in.fetch_add(3, Relaxed);
        m.disconnected(Disconnect::SlowConsumer);
        m.rejected(Refusal::from_status(404));
        m.rejected(Refusal::Timeout);
        m.rejected(Refusal::from_status(401));
        let text = m.render(&Gauges {
            chat_clients: 2,
            echo_clients: 1,
            handshaking: 0,
            http_requests: 0,
            client_threads: 3,
            queued_bytes: 0,
            rooms: vec![("lobby".into(), 2)],
            backplane: Some((true, 0)),
            moderation: vec![("kick", 2)],
        });
        assert!(text.contains("threadchat_backplane_ready 1\n"));
        assert!(text.contains("threadchat_moderation_actions_total{action=\"kick\"} 2\n"));
        assert!(text.contains("threadchat_clients{endpoint=\"chat\"} 2\n"));
        assert!(text.contains("threadchat_messages_received_total 3\n"));
        assert!(text.contains("threadchat_disconnects_total{reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("threadchat_refusals_total{reason=\"not_found\"} 1\n"));
        assert!(text.contains("threadchat_refusals_total{reason=\"timeout\"} 1\n"));
        assert!(text.contains("threadchat_refusals_total{reason=\"auth\"} 1\n"));
        assert!(text.contains("threadchat_refusals_total{reason=\"rate\"} 0\n"));
        assert!(text.contains("# TYPE threadchat_deliveries_total counter\n"));
        assert!(text.contains("threadchat_room_members{room=\"lobby\"} 2\n"));
        // Every sample line is NAME[{labels}] VALUE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("threadchat_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn history_keeps_rates_for_five_minutes() {
        let m = Metrics::default();
        m.sample(1); // first call only sets the baseline
        assert!(m.history().is_empty());
        m.messages_in.fetch_add(10, Relaxed);
        m.sample(2);
        let h = m.history();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].clients, 2);
        assert!(h[0].messages_per_sec > 0.0);
        for _ in 0..HISTORY_LEN + 10 {
            m.sample(1);
        }
        assert_eq!(m.history().len(), HISTORY_LEN);
    }
}
