//! [`TokenCache`], the verified-token cache: the layer's hit path, one lookup from a token
//! to everything a request needs.
//!
//! A session pairs a verified token with its [`SyncedUser`] and the [`ClerkUser`] handed to
//! requests. A repeat request costs one hash of the token's last bytes, one read lock on one
//! of 64 shards, one string comparison, two atomic loads (is the user still current?) and one
//! reference count increment — no per-read bookkeeping, which is where a general-purpose cache
//! spends its time. Entries sit in the map itself (no pointer to chase for `exp`), so a hit
//! touches the bucket, the stored token, the synced user and the `ClerkUser`'s count. Entries
//! leave when the shard is full (expired tokens first, then any), and a token past its `exp`
//! is never answered.
//!
//! Machine tokens share the cache: M2M and OAuth JWTs like sessions, and opaque tokens
//! (`ak_…`, `mt_…`, `oat_…`, secrets that only the Backend API can check) under a second
//! keyed hash instead of the token itself, for as long as their verification is trusted. A
//! machine or organization caller has no synced user and is always current.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::extract::{ClerkMachine, ClerkUser, Credential};
use crate::sync::SyncedUser;
use crate::token::keys::KeyEpoch;
use crate::token_type::TokenType;

const SHARDS: usize = 64;
/// Where the shard index starts in a key's hash (see [`TokenCache::shard`]).
const SHARD_SHIFT: u32 = 40;
/// Bytes of the token's end that are hashed: part of its RSA signature, so as good as random.
const HASHED_TAIL: usize = 32;

/// A verified token with its caller: a synced user, or a machine.
struct Session {
    check: Check,
    /// The token's `exp`, copied here so that the check needs no pointer; for an opaque
    /// token, the end of its trust (see [`TokenCache::insert`]).
    exp: i64,
    /// The key-removal epoch the token was verified under.
    key_epoch: u64,
    cached: Cached,
}

/// How a lookup makes sure an entry is for exactly its token.
enum Check {
    /// A JWT: the token itself, compared whole.
    Token(Box<str>),
    /// An opaque machine token (a secret that the Backend API checks): never stored; a second
    /// keyed hash of the whole token, independent of the map key's, so that together they
    /// are 128 keyed bits.
    Digest(u64),
}

/// The caller a cached token stands for.
pub(crate) enum Cached {
    /// A user, current while its [`SyncedUser`] is.
    User(ClerkUser, Arc<SyncedUser>),
    /// A machine or an organization: nothing synced, always current.
    Machine(ClerkMachine),
}

/// Who called: the answer of a cache hit, and of a verification.
pub(crate) enum Caller {
    User(ClerkUser),
    Machine(ClerkMachine),
}

impl Caller {
    pub(crate) fn token_type(&self) -> TokenType {
        match self {
            Self::User(user) => user.token_type(),
            Self::Machine(machine) => machine.token_type(),
        }
    }
}

/// What [`TokenCache::get`] found for a token.
pub(crate) enum Lookup {
    /// Cached, not expired, its user current: the caller to hand to the request (counted as
    /// a hit).
    Hit(Caller),
    /// A JWT cached but past `exp` (with leeway).
    Expired,
    /// Cached, but its user is no longer current: what the token said, to sync again without
    /// verifying again, and the key epoch it was verified under (the session is cached again
    /// under that epoch, so a key removed meanwhile still evicts it).
    Stale(Credential, u64),
    /// Not cached.
    Absent,
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
    map: RwLock<HashMap<u64, Session, PreHashed>>,
    hits: AtomicU64,
}

/// Token → [`Session`], bounded, sharded.
pub(crate) struct TokenCache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    /// Hashes the map key: foldhash, a few instructions for the 32 bytes where SipHash
    /// takes ~270. Quality is what the bucket choice needs: the tail is part of an RSA
    /// signature (or of a random opaque secret), only verified tokens are inserted, so
    /// nobody can fill one bucket chain, and the whole token is still compared on every
    /// lookup (opaque ones through the SipHash digest).
    seed: foldhash::fast::RandomState,
    /// Seeds [`Check::Digest`].
    check_seed: RandomState,
    leeway: i64,
    /// Moves when a signing key leaves the key set: sessions verified before are absent then
    /// (verified again, and refused if their key is gone).
    key_epoch: KeyEpoch,
}

impl TokenCache {
    /// `capacity` sessions at most (split evenly over the shards).
    pub(crate) fn new(capacity: u64, leeway: i64, key_epoch: KeyEpoch) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            shard_capacity: (capacity / SHARDS).max(1),
            seed: foldhash::fast::RandomState::default(),
            check_seed: RandomState::new(),
            leeway,
            key_epoch,
        }
    }

    /// The key epoch now; read it before verifying a token that will be inserted.
    pub(crate) fn key_epoch(&self) -> u64 {
        self.key_epoch.load(Ordering::Acquire)
    }

    /// Keyed by the token's tail with a per-process random seed; the whole token is compared
    /// on lookup, so a collision is only ever a miss.
    fn key(&self, bytes: &[u8]) -> u64 {
        self.seed
            .hash_one(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..])
    }

    fn digest(&self, token: &[u8]) -> u64 {
        self.check_seed.hash_one(token)
    }

    fn matches(&self, check: &Check, token: &[u8]) -> bool {
        match check {
            Check::Token(stored) => stored.as_bytes() == token,
            Check::Digest(digest) => *digest == self.digest(token),
        }
    }

    fn shard(&self, key: u64) -> &Shard {
        // hashbrown takes a bucket from the key's low bits and a 7-bit tag from its top bits;
        // the shard comes from bits 40-45, clear of both. (Taken from the low bits, every key of
        // a shard shared its low 6 bits, so only 1 bucket in 64 could be a home bucket and
        // lookups probed long chains.)
        &self.shards[((key >> SHARD_SHIFT) as usize) % SHARDS]
    }

    /// The session of exactly this token, judged at `now`; `is_current` tells whether its
    /// synced user still is. The whole answer is read under the shard's read lock.
    pub(crate) fn get(
        &self,
        token: &(impl AsRef<[u8]> + ?Sized),
        now: i64,
        is_current: impl FnOnce(&SyncedUser, &ClerkUser) -> bool,
    ) -> Lookup {
        let token = token.as_ref();
        let key = self.key(token);
        let shard = self.shard(key);
        let map = match shard.map.read() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(session) = map
            .get(&key)
            .filter(|session| self.matches(&session.check, token))
        else {
            return Lookup::Absent;
        };
        if session.key_epoch != self.key_epoch.load(Ordering::Acquire) {
            return Lookup::Absent;
        }
        if session.exp.saturating_add(self.leeway) < now {
            // An opaque token's trust ran out: the Backend API is asked again.
            return match session.check {
                Check::Token(_) => Lookup::Expired,
                Check::Digest(_) => Lookup::Absent,
            };
        }
        let hit = match &session.cached {
            Cached::User(answer, user) if !is_current(user, answer) => {
                return match session.check {
                    Check::Token(_) => Lookup::Stale(answer.credential(), session.key_epoch),
                    // An opaque token's trust is the machine verifier's to judge again (from
                    // its own cache, without a call while that lasts).
                    Check::Digest(_) => Lookup::Absent,
                };
            }
            Cached::User(answer, _) => Caller::User(answer.clone()),
            Cached::Machine(machine) => Caller::Machine(machine.clone()),
        };
        // On the shard's own counter: no cache line shared by all requests.
        shard.hits.fetch_add(1, Ordering::Relaxed);
        Lookup::Hit(hit)
    }

    /// Hits counted so far (all shards).
    pub(crate) fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.hits.load(Ordering::Relaxed))
            .sum()
    }

    /// Caches the caller of a JWT (a session, or an M2M or OAuth JWT) until its `exp` plus
    /// the leeway. `key_epoch` is [`key_epoch`](Self::key_epoch) as read before the token was
    /// verified.
    pub(crate) fn insert(&self, token: &str, cached: Cached, exp: i64, now: i64, key_epoch: u64) {
        let check = Check::Token(token.into());
        self.put(token, check, cached, exp, now, key_epoch);
    }

    /// Caches the caller of an opaque machine token (`ak_…`, `mt_…`, `oat_…`) until
    /// `until_ms`, the end of its verification's trust, and never past it: an entry ends in
    /// the second before `until_ms` (so up to a second early), and is then verified again.
    pub(crate) fn insert_opaque(&self, token: &str, cached: Cached, until_ms: i64, now: i64) {
        let exp = until_ms
            .div_euclid(1000)
            .saturating_sub(1)
            .saturating_sub(self.leeway);
        if exp.saturating_add(self.leeway) < now {
            return;
        }
        let check = Check::Digest(self.digest(token.as_bytes()));
        self.put(token, check, cached, exp, now, self.key_epoch());
    }

    fn put(&self, token: &str, check: Check, cached: Cached, exp: i64, now: i64, key_epoch: u64) {
        let key = self.key(token.as_bytes());
        let session = Session {
            check,
            exp,
            key_epoch,
            cached,
        };
        let mut shard = match self.shard(key).map.write() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if shard.len() >= self.shard_capacity && !shard.contains_key(&key) {
            let leeway = self.leeway;
            shard.retain(|_, session| session.exp.saturating_add(leeway) >= now);
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

    fn session(sub: &str, exp: i64) -> Cached {
        let claims = serde_json::from_value(serde_json::json!({
            "sub": sub, "iss": "https://x", "exp": exp, "iat": exp - 60
        }))
        .unwrap();
        let credential = Credential {
            claims: Arc::new(claims),
            machine: None,
        };
        let answer = ClerkUser::new(credential, "free".into(), true, Default::default());
        Cached::User(answer, user())
    }

    fn user() -> Arc<SyncedUser> {
        crate::sync::test_user("free", &AtomicU64::new(0))
    }

    fn found(cache: &TokenCache, token: &str) -> Option<String> {
        match cache.get(token, 100, |_, _| true) {
            Lookup::Hit(Caller::User(user)) => Some(user.user_id().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn exact_token_only() {
        let cache = TokenCache::new(1000, 5, KeyEpoch::default());
        let token = format!("{}.sig-{}", "a".repeat(100), "x".repeat(40));
        cache.insert(&token, session("user_1", 200), 200, 100, 0);
        assert_eq!(found(&cache, &token).as_deref(), Some("user_1"));
        assert_eq!(cache.hits(), 1);
        // Same tail (same signature), other payload: a miss, not the cached claims.
        let forged = format!("{}.sig-{}", "b".repeat(100), "x".repeat(40));
        assert!(matches!(
            cache.get(&forged, 100, |_, _| true),
            Lookup::Absent
        ));
        assert!(matches!(
            cache.get("other", 100, |_, _| true),
            Lookup::Absent
        ));
        assert_eq!(cache.hits(), 1, "misses are not hits");
    }

    #[test]
    fn expired_and_stale_sessions_are_not_hits() {
        let cache = TokenCache::new(1000, 5, KeyEpoch::default());
        cache.insert("token-1", session("user_1", 200), 200, 100, 0);
        // Within the leeway, then past it.
        assert!(matches!(
            cache.get("token-1", 205, |_, _| true),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.get("token-1", 206, |_, _| true),
            Lookup::Expired
        ));
        match cache.get("token-1", 100, |_, _| false) {
            Lookup::Stale(credential, epoch) => {
                assert_eq!(credential.claims.sub, "user_1");
                assert_eq!(epoch, 0);
            }
            _ => panic!("a session whose user is not current is stale"),
        }
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn opaque_tokens_are_kept_as_digests_and_end_before_their_trust_does() {
        let cache = TokenCache::new(1000, 5, KeyEpoch::default());
        let now = 1_000;
        let key = "ak_3beecc9c60adb5f9b850e91a8ee1e992";
        cache.insert_opaque(key, session("user_1", 0), (now + 30) * 1000, now);
        assert_eq!(found_at(&cache, key, now).as_deref(), Some("user_1"));
        // Another key, even one with the same last 32 bytes: a miss.
        let twin = "xk_3beecc9c60adb5f9b850e91a8ee1e992";
        assert!(matches!(cache.get(twin, now, |_, _| true), Lookup::Absent));
        // The secret is not stored.
        let shard = cache.shard(cache.key(key.as_bytes())).map.read().unwrap();
        assert!(shard.values().all(|s| matches!(s.check, Check::Digest(_))));
        drop(shard);
        // The second before `until`, then not at all, and absent (asked again), not expired.
        assert!(found_at(&cache, key, now + 29).is_some());
        assert!(matches!(
            cache.get(key, now + 30, |_, _| true),
            Lookup::Absent
        ));
        // A stale user of an opaque token is absent too: the machine verifier judges again.
        assert!(matches!(cache.get(key, now, |_, _| false), Lookup::Absent));
        // Trust already over: not cached at all.
        cache.insert_opaque("ak_late", session("user_2", 0), now * 1000, now);
        assert!(matches!(
            cache.get("ak_late", now, |_, _| true),
            Lookup::Absent
        ));
    }

    fn found_at(cache: &TokenCache, token: &str, now: i64) -> Option<String> {
        match cache.get(token, now, |_, _| true) {
            Lookup::Hit(Caller::User(user)) => Some(user.user_id().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn shards_and_buckets_take_different_bits() {
        let cache = TokenCache::new(64_000, 5, KeyEpoch::default());
        // Keys of one shard must still spread over the low bits hashbrown buckets by.
        let mut low_bits = std::collections::HashSet::new();
        let mut in_shard_0 = 0;
        for i in 0..20_000 {
            let key = cache.key(format!("header.payload.signature-{i:08}").as_bytes());
            if std::ptr::eq(cache.shard(key), &cache.shards[0]) {
                in_shard_0 += 1;
                low_bits.insert(key & 63);
            }
        }
        assert!(in_shard_0 > 200, "{in_shard_0}");
        assert!(
            low_bits.len() > 60,
            "low 6 bits seen in one shard: {}",
            low_bits.len()
        );
    }

    #[test]
    fn full_shards_drop_expired_sessions_first_and_stay_bounded() {
        let cache = TokenCache::new(640, 5, KeyEpoch::default()); // 10 per shard
        for i in 0..5_000 {
            cache.insert(&format!("old-{i:08}"), session("u", 50), 50, 100, 0);
        }
        assert!(cache.len() <= 640, "bounded: {}", cache.len());
        // Live sessions displace expired ones and are not themselves evicted while there is
        // anything expired to drop (100 over 64 shards stays under 10 per shard).
        for i in 0..100 {
            cache.insert(&format!("new-{i:08}"), session("u", 500), 500, 100, 0);
        }
        for i in 0..100 {
            assert!(found(&cache, &format!("new-{i:08}")).is_some(), "new-{i}");
        }
        assert!(cache.len() <= 640);
    }
}
