//! The layer's hit path: one lookup from a token to everything a request needs.
//!
//! A [`Session`] pairs a verified token's claims with its [`SyncedUser`]. A repeat request
//! costs one hash of the token's last bytes, one read lock on one of 64 shards, one string
//! comparison and two atomic loads (is the user still current?) — no per-read bookkeeping,
//! which is where a general-purpose cache spends its time. Entries leave when the shard is
//! full (expired tokens first, then any), and a token past its `exp` is never answered.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::sync::cache::SyncedUser;
use crate::token::SessionClaims;

const SHARDS: usize = 64;
/// Bytes of the token's end that are hashed: part of its RSA signature, so as good as random.
const HASHED_TAIL: usize = 32;

/// A verified token whose user is synced.
pub(crate) struct Session {
    token: Box<str>,
    pub(crate) claims: Arc<SessionClaims>,
    pub(crate) user: Arc<SyncedUser>,
}

/// The keys are already hashes: hash them no further.
#[derive(Clone, Copy, Default)]
struct PreHashed;

#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (keys are u64); fold anything else in for completeness.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl BuildHasher for PreHashed {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough::default()
    }
}

/// One shard: its map and its hit counter, on their own cache lines so that two cores working
/// on two shards never contend.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    map: RwLock<HashMap<u64, Arc<Session>, PreHashed>>,
    hits: AtomicU64,
}

/// A cached session found for a token; [`count`](Self::count) records it as a hit.
pub(crate) struct Found<'a> {
    pub(crate) session: Arc<Session>,
    hits: &'a AtomicU64,
}

impl Found<'_> {
    /// Counts this lookup as a hit (on the shard's own counter: no shared cache line).
    pub(crate) fn count(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Token → [`Session`], bounded, sharded.
pub(crate) struct SessionCache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    seed: RandomState,
    leeway: i64,
}

impl SessionCache {
    /// `capacity` sessions at most (split evenly over the shards).
    pub(crate) fn new(capacity: u64, leeway: i64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            shard_capacity: (capacity / SHARDS).max(1),
            seed: RandomState::new(),
            leeway,
        }
    }

    /// Keyed by the token's tail with a per-process random seed; the whole token is compared
    /// on lookup, so a collision is only ever a miss.
    fn key(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.seed
            .hash_one(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..])
    }

    fn shard(&self, key: u64) -> &Shard {
        // The low bits pick the shard; HashMap uses the high bits (hashbrown's control bytes).
        &self.shards[(key as usize) % SHARDS]
    }

    /// The session of exactly this token, if cached.
    pub(crate) fn get(&self, token: &str) -> Option<Found<'_>> {
        let key = self.key(token);
        let shard = self.shard(key);
        let map = match shard.map.read() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let session = map
            .get(&key)
            .filter(|session| *session.token == *token)
            .cloned()?;
        Some(Found {
            session,
            hits: &shard.hits,
        })
    }

    /// Hits counted so far (all shards).
    pub(crate) fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.hits.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn insert(
        &self,
        token: &str,
        claims: Arc<SessionClaims>,
        user: Arc<SyncedUser>,
        now: i64,
    ) {
        let key = self.key(token);
        let session = Arc::new(Session {
            token: token.into(),
            claims,
            user,
        });
        let mut shard = match self.shard(key).map.write() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if shard.len() >= self.shard_capacity && !shard.contains_key(&key) {
            let leeway = self.leeway;
            shard.retain(|_, session| session.claims.exp.saturating_add(leeway) >= now);
            if shard.len() >= self.shard_capacity
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, session);
    }

    /// Sessions held (all shards).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| match shard.map.read() {
                Ok(map) => map.len(),
                Err(poisoned) => poisoned.into_inner().len(),
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn claims(sub: &str, exp: i64) -> Arc<SessionClaims> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "sub": sub, "iss": "https://x", "exp": exp, "iat": exp - 60
            }))
            .unwrap(),
        )
    }

    fn user() -> Arc<SyncedUser> {
        crate::sync::cache::test_user("free", &AtomicU64::new(0))
    }

    #[test]
    fn exact_token_only() {
        let cache = SessionCache::new(1000, 5);
        let token = format!("{}.sig-{}", "a".repeat(100), "x".repeat(40));
        cache.insert(&token, claims("user_1", 200), user(), 100);
        assert_eq!(cache.get(&token).unwrap().session.claims.sub, "user_1");
        // Same tail (same signature), other payload: a miss, not the cached claims.
        let forged = format!("{}.sig-{}", "b".repeat(100), "x".repeat(40));
        assert!(cache.get(&forged).is_none());
        assert!(cache.get("other").is_none());
    }

    #[test]
    fn full_shards_drop_expired_sessions_first_and_stay_bounded() {
        let cache = SessionCache::new(640, 5); // 10 per shard
        for i in 0..5_000 {
            cache.insert(&format!("old-{i:08}"), claims("u", 50), user(), 100);
        }
        assert!(cache.len() <= 640, "bounded: {}", cache.len());
        // Live sessions displace expired ones and are not themselves evicted while there is
        // anything expired to drop (100 over 64 shards stays under 10 per shard).
        for i in 0..100 {
            cache.insert(&format!("new-{i:08}"), claims("u", 500), user(), 100);
        }
        for i in 0..100 {
            assert!(cache.get(&format!("new-{i:08}")).is_some(), "new-{i}");
        }
        assert!(cache.len() <= 640);
    }
}
