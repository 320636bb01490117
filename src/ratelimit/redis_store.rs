//! [`RedisRateLimitStore`]: one limit shared by every process, one Lua script per decision.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::denied::DeniedUntil;
use super::limits::Limit;
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::error::{StoreError, StoreFuture};
use crate::redis_conn;

/// GCRA in one script, on Redis's clock (`TIME`), so the processes' clocks do not matter.
/// KEYS[1] is the key; ARGV[1] the emission interval and ARGV[2] the burst tolerance, in
/// microseconds. The key holds the theoretical arrival time (TAT) in microseconds since the
/// Unix epoch (below 2^53: exact in Lua's doubles) and expires when it is reached, which is
/// when the whole budget is back: nothing is left to clean. Returns `{allowed, ahead}` with
/// `ahead` = TAT − now in microseconds.
const GCRA_LUA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
return {1, tat - now}
";

/// The default key prefix.
const PREFIX: &str = "clerk_sync:rl:";

/// Rate-limit state in Redis, so every process shares one limit per key: GCRA (the same
/// arithmetic, decisions, headers and 429 as [`crate::MemoryRateLimitStore`]) in one Lua
/// script per decision, run with `EVALSHA` and loaded again when Redis answers `NOSCRIPT`
/// (after a restart or `SCRIPT FLUSH`).
///
/// - **Time** comes from Redis (`TIME` inside the script): the processes' clocks do not
///   matter.
/// - **Keys** are `<prefix>{<storage key>}`, for example `clerk_sync:rl:{user:user_2x…}`
///   ([`RateLimitKey::storage_key`]; prefix set with [`key_prefix`](Self::key_prefix)). Each
///   script call touches that one key, and the hash tag makes the Redis Cluster slot depend
///   on the subject alone, so the keys work on Cluster. (This store connects to one node, or a
///   proxy in front of a cluster; it does not follow `MOVED` redirections itself.) A key
///   expires when its budget is full again: nothing to clean.
/// - **Refusals are remembered** in this process until their retry time, by key and limit: a
///   client hammering past its limit costs no Redis call until it may pass again, and after
///   a tier change (plus [`crate::ClerkSync::invalidate`]) the new limit applies on the next
///   request. At most 10,000 ids and 10,000 networks are remembered.
/// - **Failures** (Redis down, a timeout; connecting and each command are bounded by
///   [`timeout`](Self::timeout), 250 ms by default) follow the layer's
///   [`StoreFailurePolicy`](crate::ratelimit::StoreFailurePolicy). The connection is
///   multiplexed and comes back by itself once Redis does.
///
/// ```no_run
/// # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
/// use clerk_sync::ratelimit::RedisRateLimitStore;
/// use clerk_sync::{Limit, RateLimitLayer, TierLimits};
///
/// let store = RedisRateLimitStore::new("redis://127.0.0.1:6379")?;
/// store.ping().await?; // optional: fail at start-up rather than on the first request
/// let limiter = RateLimitLayer::with_store(TierLimits::new(Limit::per_minute(60)?), store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimitStore {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    script: Arc<Script>,
    denied: Arc<DeniedUntil>,
}

impl std::fmt::Debug for RedisRateLimitStore {
    // The client's connection info holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimitStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimitStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host:port[/db]`, `rediss://`
    /// for TLS). It connects on the first decision (see [`ping`](Self::ping) to check at
    /// start-up), so the app starts while Redis is down and the failure policy applies.
    ///
    /// Call it inside a Tokio runtime: the connection spawns its reconnect watcher. Fails
    /// only on a URL that is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let client = redis_conn::client(url)?;
        let timeout = redis_conn::DEFAULT_TIMEOUT;
        Ok(Self {
            connection: redis_conn::manager(client.clone(), timeout)?,
            client,
            prefix: PREFIX.into(),
            timeout,
            script: Arc::new(Script::new(GCRA_LUA)),
            denied: Arc::default(),
        })
    }

    /// Prefixes every key with `prefix` (default `clerk_sync:rl:`), for example to share one
    /// Redis between apps or environments.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// How long connecting and each decision may take before the store fails (and the
    /// layer's failure policy applies). Default: 250 ms. Call it inside a Tokio runtime.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, StoreError> {
        self.connection = redis_conn::manager(self.client.clone(), timeout)?;
        self.timeout = timeout;
        Ok(self)
    }

    /// Connects (when not connected) and loads the script: an error when Redis cannot be
    /// reached within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let load = self.script.prepare_invoke();
        redis_conn::bounded(self.timeout, load.load_async(&mut connection)).await?;
        Ok(())
    }

    /// The Redis key of `key`: `<prefix>{<storage key>}`.
    fn redis_key(&self, key: RateLimitKey<'_>) -> String {
        format!("{}{{{}}}", self.prefix, key.storage_key())
    }

    async fn decide(&self, key: RateLimitKey<'_>, limit: Limit) -> Result<Decision, StoreError> {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let interval = limit.emission_interval();
        let tolerance = limit.period().saturating_sub(interval);
        // Truncated to whole microseconds, `count` intervals still fit in the period, so
        // exactly `count` requests pass in a burst.
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(self.redis_key(key));
        invocation
            .arg(micros(interval).max(1))
            .arg(micros(tolerance));
        let (allowed, ahead): (i64, i64) =
            redis_conn::bounded(self.timeout, invocation.invoke_async(&mut connection)).await?;
        let ahead = Duration::from_micros(u64::try_from(ahead).unwrap_or(0));
        let decision = Decision::from_gcra(allowed == 1, ahead, limit);
        if !decision.allowed {
            self.denied.insert(key, limit, &decision);
        }
        Ok(decision)
    }
}

impl RateLimitStore for RedisRateLimitStore {
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision> {
        Box::pin(self.decide(key, limit))
    }

    /// Answers a refusal remembered in this process until its retry time; everything else
    /// goes to Redis.
    fn check_now(&self, key: RateLimitKey<'_>, limit: Limit) -> Option<Decision> {
        self.denied.get(key, limit)
    }
}
