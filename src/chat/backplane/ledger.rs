//! The cluster's names (part of the backplane): who holds which display name on any
//! instance, and which names belong to a JWT user for good, kept in Redis so that two
//! users on two instances never show under the same name (see `chat/names.rs`).
//!
//! - `threadchat:names` (hash): name key → `USER\nINSTANCE\nEXPIRES_MS`. A claim is one
//!   Lua script (atomic: of two instances asking at once, one wins). The instance renews
//!   its holders every second (`renew`, from the backplane reader); a crashed instance's
//!   names expire after `HOLD_TTL` and go to the next claimant.
//! - `threadchat:reserved` (hash): name key → user: the JWT reservations, cluster-wide
//!   (each instance also keeps them in its own store).
//!
//! Calls come from connection threads (a rename, a sign-in) through a small pool of
//! connections; never under a lock. While Redis is unreachable the ledger answers `Err`
//! at once (for `DOWN_PAUSE` after a failure) and names are checked on this instance only.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::chat::names::Ledger;

const NAMES_KEY: &str = "threadchat:names";
const RESERVED_KEY: &str = "threadchat:reserved";
/// A held name not renewed for this long is free (a crashed instance's names).
pub const HOLD_TTL: Duration = Duration::from_secs(5);
/// After a failed call, Redis is not tried again for this long (no call waits on a dead
/// server's timeouts).
const DOWN_PAUSE: Duration = Duration::from_secs(1);
/// Connections kept for reuse.
const POOL: usize = 4;

/// KEYS: names, reserved. ARGV: key, user, instance, now, ttl, force. Returns the other
/// user that holds or owns the name, or nil once `user` holds it.
const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner and owner ~= ARGV[2] then return owner end
if ARGV[6] ~= '1' then
  local held = redis.call('HGET', KEYS[1], ARGV[1])
  if held then
    local user, exp = string.match(held, '^(.*)\n[^\n]*\n(%d+)$')
    if user and user ~= ARGV[2] and tonumber(exp) > tonumber(ARGV[4]) then return user end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. (tonumber(ARGV[4]) + tonumber(ARGV[5])))
return false
";

/// KEYS: names, reserved. ARGV: key, now. The user holding (unexpired) or owning the name.
const OWNER: &str = r"
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner then return owner end
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local user, exp = string.match(held, '^(.*)\n[^\n]*\n(%d+)$')
  if user and tonumber(exp) > tonumber(ARGV[2]) then return user end
end
return false
";

/// KEYS: names, reserved. ARGV: instance, now, ttl, then pairs of (key, user) this instance
/// holds, then pairs of (key, user) it released. Renews the first, drops the second (if
/// still theirs), deletes a few expired entries, and returns the keys this instance lost
/// with who has them now.
const RENEW: &str = r"
local lost = {}
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local key, user = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  local owner = redis.call('HGET', KEYS[2], key)
  local other = nil
  if owner and owner ~= user then
    other = owner
  else
    local held = redis.call('HGET', KEYS[1], key)
    if held then
      local u, exp = string.match(held, '^(.*)\n[^\n]*\n(%d+)$')
      if u and u ~= user and tonumber(exp) > tonumber(ARGV[2]) then other = u end
    end
  end
  if other then
    lost[#lost + 1] = key
    lost[#lost + 1] = other
  else
    redis.call('HSET', KEYS[1], key, user .. '\n' .. ARGV[1] .. '\n' .. (tonumber(ARGV[2]) + tonumber(ARGV[3])))
  end
end
local base = 5 + 2 * n
for i = base, #ARGV - 1, 2 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held and string.match(held, '^(.*)\n') == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
local scan = redis.call('HSCAN', KEYS[1], redis.call('GET', KEYS[1] .. ':cursor') or '0', 'COUNT', 100)
redis.call('SET', KEYS[1] .. ':cursor', scan[1])
for i = 1, #scan[2], 2 do
  local exp = string.match(scan[2][i + 1], '\n(%d+)$')
  if exp and tonumber(exp) <= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[1], scan[2][i]) end
end
return lost
";

pub struct RedisLedger {
    client: redis::Client,
    instance: String,
    pool: Mutex<Vec<redis::Connection>>,
    /// Set after a failure: no call before then.
    down_until: Mutex<Option<Instant>>,
    claim: redis::Script,
    owner: redis::Script,
    renew: redis::Script,
}

impl RedisLedger {
    pub fn new(client: redis::Client, instance: String) -> RedisLedger {
        RedisLedger {
            client,
            instance,
            pool: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            claim: redis::Script::new(CLAIM),
            owner: redis::Script::new(OWNER),
            renew: redis::Script::new(RENEW),
        }
    }

    /// Runs `f` on a pooled connection (the backplane's short calls from any thread use it
    /// too); a failure marks Redis down for `DOWN_PAUSE`.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        if self.down_until.lock().is_some_and(|t| Instant::now() < t) {
            return Err("Redis is unreachable".into());
        }
        let con = self.pool.lock().pop();
        let mut con = match con {
            Some(c) => c,
            None => super::connect(&self.client).map_err(|e| self.failed(e))?,
        };
        let result = f(&mut con).map_err(|e| self.failed(e))?;
        let mut pool = self.pool.lock();
        if pool.len() < POOL {
            pool.push(con);
        }
        Ok(result)
    }

    fn failed(&self, e: redis::RedisError) -> String {
        *self.down_until.lock() = Some(Instant::now() + DOWN_PAUSE);
        log::debug!("backplane: names ledger: {e}");
        format!("Redis: {e}")
    }
}

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

impl Ledger for RedisLedger {
    fn claim(&self, key: &str, user: &str, force: bool) -> Result<Option<String>, String> {
        self.with(|con| {
            self.claim
                .key(NAMES_KEY)
                .key(RESERVED_KEY)
                .arg(key)
                .arg(user)
                .arg(&self.instance)
                .arg(now_ms())
                .arg(HOLD_TTL.as_millis() as u64)
                .arg(if force { "1" } else { "0" })
                .invoke(con)
        })
    }

    fn reserve(&self, key: &str, user: &str) -> Result<String, String> {
        self.with(|con| {
            let _: bool = redis::cmd("HSETNX").arg(RESERVED_KEY).arg(key).arg(user).query(con)?;
            redis::cmd("HGET").arg(RESERVED_KEY).arg(key).query(con)
        })
    }

    fn owner(&self, key: &str) -> Result<Option<String>, String> {
        self.with(|con| self.owner.key(NAMES_KEY).key(RESERVED_KEY).arg(key).arg(now_ms()).invoke(con))
    }

    fn renew(&self, held: &[(String, String)], released: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let lost: Vec<String> = self.with(|con| {
            let mut call = self.renew.prepare_invoke();
            call.key(NAMES_KEY).key(RESERVED_KEY);
            call.arg(&self.instance).arg(now_ms()).arg(HOLD_TTL.as_millis() as u64).arg(held.len());
            for (key, user) in held.iter().chain(released) {
                call.arg(key).arg(user);
            }
            call.invoke(con)
        })?;
        Ok(lost.chunks(2).filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone()))).collect())
    }
}
