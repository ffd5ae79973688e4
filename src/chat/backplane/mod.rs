//! The Redis backplane (`--redis`): several instances behind one address, one chat.
//!
//! **Mechanism: one Redis stream as the cluster's log.** To send, an instance runs a small
//! Lua script that atomically takes the room's next number (`INCR threadchat:seq:ROOM`) and
//! appends the message with it to the stream `threadchat:log` (`XADD`). Because the script
//! is atomic, the stream's order and every room's `seq` agree. Every instance — the sender's
//! too — has one reader thread that follows the stream (`XREAD BLOCK` from the last entry it
//! processed) and, for each batch, does what the sequencer does alone: store (in one
//! transaction), broadcast to its own members in stream order, then acknowledge its own
//! senders. So every client everywhere sees one order per room, each message once, and an
//! `ack` still means "stored".
//!
//! Why not plain `PUBLISH`: it has no order across publishers and forgets whatever was sent
//! while a subscriber was disconnected. A stream is a log: a reader that was away continues
//! from the last entry it saw. (`INCR` + `PUBLISH` would number messages but still lose what
//! was published during a disconnection.)
//!
//! Failure: when Redis is unreachable, the instance keeps its clients, history and
//! presence; sending is refused with an error (nothing is acknowledged that was not stored),
//! `/readyz` says 503, and the reader reconnects with backoff and catches up from its last
//! entry. If Redis lost its data (restarted without persistence), each number is re-seeded
//! above the highest the sending instance has seen (the script's `floor`), and a reader that
//! finds a jump in a room's numbers first fills it from the store (exact with a shared
//! Postgres).
//!
//! Presence: every second each instance writes its rooms' members (connection id, user id
//! and name, one per user) and its connected users to `threadchat:presence:INSTANCE`
//! (expiring after 5 s, so a crashed instance's entries go) and reads the others'. Presence
//! lists, counts and `GET /api/rooms` include them, local members get `join`/`leave`/`name`
//! for users that appeared, vanished or were renamed elsewhere (within about a second; a
//! crashed instance's members leave when its entry expires), and a `dm` finds its recipient
//! on any instance.
//!
//! Names: who holds which display name, cluster-wide, is the ledger's (`ledger.rs`), renewed
//! by the reader with the presence. `typing` events travel through the log as entries
//! without a number (field `t`), relayed by every other instance's reader, never stored.
//!
//! Threads: "backplane" (the reader, also the presence and names sync). The sequencer thread
//! publishes through its own connection; connection threads use the ledger's small pool
//! (names, typing). Nothing else talks to Redis.

mod ledger;
mod reader;

pub use reader::{ReaderParts, run_reader};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::chat::commit::{Reply, Submit, reply_err};
use crate::chat::hub::Hub;

/// The cluster's message log.
const LOG_KEY: &str = "threadchat:log";
/// Entries the log keeps (approximately): far more than a disconnected instance could need
/// to catch up on; older history lives in the store.
const LOG_MAXLEN: u64 = 100_000;
/// Entries read per `XREAD`.
const READ_COUNT: usize = 512;
/// How long one `XREAD` waits for new entries; also how often presence may be synced.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// Connect, read and write timeout for Redis commands (beyond the blocking read).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Presence is written this often and expires after `PRESENCE_TTL_SECS`.
const PRESENCE_EVERY: Duration = Duration::from_secs(1);
const PRESENCE_TTL_SECS: u64 = 5;
/// `/readyz` fails if the reader has not reached the end of the log for this long.
const MAX_LAG: Duration = Duration::from_secs(3);
/// Reconnection backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Numbers and logs a whole batch atomically, in one call (a call per message cost Redis a
/// SHA1 of the script text and a round of argument parsing each). KEYS: the log, then each
/// message's room counter. ARGV: MAXLEN, then per message the lowest acceptable previous
/// number (the sender's last seen seq) and the payload. Returns each message's seq.
const PUBLISH_SCRIPT: &str = r"
local seqs = {}
for i = 2, #KEYS do
  local floor = tonumber(ARGV[2 * i - 2])
  if tonumber(redis.call('GET', KEYS[i]) or '0') < floor then
    redis.call('SET', KEYS[i], floor)
  end
  local seq = redis.call('INCR', KEYS[i])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', seq, 'm', ARGV[2 * i - 1])
  seqs[#seqs + 1] = seq
end
return seqs
";

/// What travels in a log entry besides its `seq`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    room: String,
    id: u64,
    /// The sender's user id (absent from entries an older version wrote).
    #[serde(default)]
    user: String,
    name: String,
    text: String,
    ts: u64,
    /// `INSTANCE:N`, so the sender's instance can find whom to acknowledge.
    token: String,
}

/// A `typing` entry in the log (field `t`): relayed by the other instances.
#[derive(serde::Serialize, serde::Deserialize)]
struct TypingPayload {
    instance: String,
    room: String,
    id: u64,
    user: String,
    name: String,
    expires_ms: u64,
}

/// What an instance writes each second to its presence key.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Snapshot {
    /// Members per room.
    #[serde(default)]
    rooms: HashMap<String, Vec<crate::chat::hub::RemoteMember>>,
    /// Every connected user, with the name it shows.
    #[serde(default)]
    users: HashMap<String, String>,
}

pub struct Backplane {
    client: redis::Client,
    /// The cluster's names, and the pool of connections for short calls from any thread.
    pub ledger: std::sync::Arc<ledger::RedisLedger>,
    /// Random, per process: names this instance's presence key and message tokens.
    pub instance: String,
    /// Published messages of this instance, by token, until the reader has stored them.
    pending: Mutex<HashMap<String, (Reply, Instant)>>,
    next_token: AtomicU64,
    /// Written by the reader: connected to Redis and following the log.
    connected: AtomicBool,
    /// Incremented by the reader at each (re)connection. The publisher's connection is
    /// replaced when it predates the latest one: after Redis restarts, an old connection
    /// is dead, and finding that out by failing would cost a batch of refusals.
    epoch: AtomicU64,
    /// Written by the reader: when it last reached the end of the log.
    caught_up_at: Mutex<Instant>,
    /// Written by `stop`; the reader exits when it sees it.
    stop: AtomicBool,
    /// A published message not read back by then is answered with an error (30 s).
    confirm_timeout: Duration,
    /// Test hook: log entries with this text are skipped, as if Redis lost them.
    lose_text: Option<String>,
}

impl Backplane {
    /// Checks the URL; connecting is the reader thread's job (an instance starts, and
    /// serves its own clients, even while Redis is down).
    pub fn new(url: &str, instance: String, hooks: &crate::config::TestHooks) -> Result<Backplane, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis {url}: {e}"))?;
        Ok(Backplane {
            ledger: std::sync::Arc::new(ledger::RedisLedger::new(client.clone(), instance.clone())),
            client,
            instance,
            pending: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            caught_up_at: Mutex::new(Instant::now()),
            stop: AtomicBool::new(false),
            confirm_timeout: hooks.confirm_timeout,
            lose_text: hooks.lose_log_text.clone(),
        })
    }

    /// For `/readyz`: `Err(why)` while Redis is unreachable or the log is not caught up.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.connected.load(Ordering::Acquire) {
            return Err("backplane: not connected to Redis");
        }
        if self.caught_up_at.lock().elapsed() > MAX_LAG {
            return Err("backplane: catching up with the log");
        }
        Ok(())
    }

    /// Messages published and not yet read back (for `/metrics`).
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The cluster's guest identity key (see `net/access/identity.rs`): `fresh`, if this is the
    /// first instance to ask, else the one the first stored (`SET NX`, then `GET`).
    pub fn identity_key(&self, fresh: &[u8]) -> Result<Vec<u8>, String> {
        const KEY: &str = "threadchat:identity-key";
        let why = |e: redis::RedisError| {
            format!(
                "cannot read the guest identity key from Redis ({e}); start with Redis up, or give --identity-secret"
            )
        };
        let mut con = self.connect().map_err(why)?;
        let hex = data_encoding::HEXLOWER.encode(fresh);
        let _: Option<String> = redis::cmd("SET").arg(KEY).arg(&hex).arg("NX").query(&mut con).map_err(why)?;
        let stored: String = redis::cmd("GET").arg(KEY).query(&mut con).map_err(why)?;
        data_encoding::HEXLOWER.decode(stored.as_bytes()).map_err(|_| format!("Redis key {KEY} is not hex"))
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        connect(&self.client)
    }

    /// Relays a `typing` to the members on the other instances (through the log; a
    /// best effort: never stored, and dropped if Redis is unreachable).
    pub fn publish_typing(&self, room: &str, id: u64, user: &str, name: &str, expires_ms: u64) {
        let payload = TypingPayload {
            instance: self.instance.clone(),
            room: room.to_string(),
            id,
            user: user.to_string(),
            name: name.to_string(),
            expires_ms,
        };
        let _ = self.append_unnumbered("t", &serde_json::to_string(&payload).unwrap_or_default());
    }

    /// Appends an entry without a number (field `field`, never stored as a message) to the
    /// log, through the ledger's pool: `typing` (`t`) and moderation (`x`).
    fn append_unnumbered(&self, field: &str, json: &str) -> Result<String, String> {
        self.ledger.with(|con| {
            redis::cmd("XADD")
                .arg(LOG_KEY)
                .arg("MAXLEN")
                .arg("~")
                .arg(LOG_MAXLEN)
                .arg("*")
                .arg(field)
                .arg(json)
                .query::<String>(con)
        })
    }
}

impl Backplane {
    /// This instance's name in the cluster.
    pub fn instance_name(&self) -> &str {
        &self.instance
    }

    /// Sends moderation events (JSON, `chat/moderation/actions.rs`) to the other instances
    /// through the log (field `x`), where each reader applies them in log order. `Err` is
    /// logged: the action is done here either way.
    pub fn publish_moderation(&self, json: &str) {
        if let Err(e) = self.append_unnumbered("x", json) {
            log::warn!("backplane: a moderation action could not reach the cluster: {e}");
        }
    }
}

/// A connection with the backplane's timeouts.
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT + READ_BLOCK))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// The sequencer's side: publishes batches through its own connection.
pub struct Publisher {
    con: Option<redis::Connection>,
    /// The reader's epoch when `con` was opened.
    con_epoch: u64,
    /// After a failed connection attempt, no new one is tried before this.
    retry_at: Instant,
    script: redis::Script,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher { con: None, con_epoch: 0, retry_at: Instant::now(), script: redis::Script::new(PUBLISH_SCRIPT) }
    }
}

impl Publisher {
    /// Publishes a batch (one script call, one round trip). Acknowledgements come later, from the
    /// reader; on failure every message of the batch gets an error now.
    pub fn publish(&mut self, hub: &Hub, bp: &Backplane, batch: Vec<Submit>) {
        let refuse = |batch: Vec<Submit>, why: &str| {
            for s in batch {
                reply_err(hub, s.reply, why);
            }
        };
        let epoch = bp.epoch.load(Ordering::Acquire);
        if self.con_epoch != epoch {
            self.con = None;
        }
        if bp.connected.load(Ordering::Acquire) && self.con.is_none() && Instant::now() >= self.retry_at {
            match bp.connect() {
                Ok(con) => {
                    self.con = Some(con);
                    self.con_epoch = epoch;
                }
                Err(e) => {
                    log::debug!("backplane: publisher cannot connect: {e}");
                    self.retry_at = Instant::now() + BACKOFF_MIN;
                }
            }
        }
        let (true, Some(con)) = (bp.connected.load(Ordering::Acquire), self.con.as_mut()) else {
            return refuse(batch, "message not sent: the server is reconnecting to Redis; try again shortly");
        };
        let ts = crate::clock::now_ms();
        let mut call = self.script.prepare_invoke();
        call.key(LOG_KEY).arg(LOG_MAXLEN);
        let mut tokens = Vec::with_capacity(batch.len());
        {
            let mut pending = bp.pending.lock();
            for s in batch {
                let token = format!("{}:{}", bp.instance, bp.next_token.fetch_add(1, Ordering::Relaxed));
                let payload = Payload {
                    room: s.room,
                    id: s.id,
                    user: s.user.to_string(),
                    name: s.name.to_string(),
                    text: s.text,
                    ts,
                    token,
                };
                let floor = hub.last_seq(&payload.room);
                let json = serde_json::to_string(&payload).unwrap_or_default();
                call.key(format!("threadchat:seq:{}", payload.room)).arg(floor).arg(json);
                // Registered before the round trip: the reader may see the entry before
                // this thread sees the reply.
                pending.insert(payload.token.clone(), (s.reply, Instant::now()));
                tokens.push(payload.token);
            }
        }
        // EVALSHA, and EVAL once when Redis does not have the script (after a restart).
        if let Err(e) = call.invoke::<Vec<u64>>(con) {
            log::warn!("backplane: publishing {} message(s) failed: {e}", tokens.len());
            self.con = None;
            let mut pending = bp.pending.lock();
            for token in tokens {
                // Not yet read back: tell the sender. (If Redis did run the script before
                // failing, the message is still delivered, just not acknowledged.)
                if let Some((reply, _)) = pending.remove(&token) {
                    reply_err(hub, reply, "message not sent: Redis is unavailable; try again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/readyz` follows the reader: not ready until connected, then ready only while the
    /// log was read to its end within `MAX_LAG` (a load balancer stops sending clients to
    /// an instance that lags, since they would see old messages late).
    #[test]
    fn ready_needs_a_connection_and_a_reader_that_keeps_up() {
        // Opening the client does not connect: no Redis is needed here.
        let bp = Backplane::new("redis://127.0.0.1:1/0", "test".into(), &crate::config::TestHooks::default()).unwrap();
        assert_eq!(bp.ready(), Err("backplane: not connected to Redis"));
        bp.connected.store(true, Ordering::Release);
        assert_eq!(bp.ready(), Ok(()));
        *bp.caught_up_at.lock() = Instant::now() - MAX_LAG - Duration::from_millis(100);
        assert_eq!(bp.ready(), Err("backplane: catching up with the log"));
        *bp.caught_up_at.lock() = Instant::now() - MAX_LAG + Duration::from_millis(500);
        assert_eq!(bp.ready(), Ok(()), "still inside the allowed lag");
        assert_eq!(bp.pending(), 0);
    }
}
