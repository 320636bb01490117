//! [`TokenCache`], the verified-token cache: the layer's hit path, one lookup from a token
//! to everything a request needs.
//!
//! A session pairs a verified token with its [`SyncedUser`] and the [`ClerkUser`] handed to
//! requests. A repeat request costs one keyed 128-bit digest of the token, one read lock on
//! one of 64 shards, one map probe, two atomic loads (is the user still current?) and one
//! reference count increment — no per-read bookkeeping, which is where a general-purpose cache
//! spends its time. Entries sit in the map itself (no pointer to chase for `exp`), so a hit
//! touches the bucket, the synced user and the `ClerkUser`'s count. Entries leave when the
//! shard is full (expired tokens first, then any), and a token past its `exp` is never
//! answered.
//!
//! **The token itself is not kept**, neither a session JWT nor an opaque machine secret: an
//! entry is found by [`Digest`], XXH3-128 of the whole token under a per-process random
//! 192-byte secret; 64 of its bits pick the entry, the other 64 must match. Storing the
//! ~800-byte JWT to compare it whole read 13 more cache lines per hit and took a third of a
//! session's memory (2,186 → 1,436 bytes measured, BENCHMARKS.md). Why a fast keyed hash is
//! enough here where a MAC is not needed: the digest never leaves the process, and a hit
//! answers the *cached* token's caller (its claims), never the presented token's; so to be
//! answered as someone, a request must bring a token with the same 128-bit digest as that
//! someone's token, without knowing the secret or (if it knew the token) any reason to.
//! Finding such a token blind is a 2^-128 guess per request.
//!
//! Machine tokens share the cache: M2M and OAuth JWTs like sessions, and opaque tokens
//! (`ak_…`, `mt_…`, `oat_…`, secrets that only the Backend API can check) for as long as
//! their verification is trusted. A machine or organization caller has no synced user and is
//! always current.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::extract::{ClerkMachine, ClerkUser, Credential};
use crate::sync::SyncedUser;
use crate::token::keys::KeyEpoch;
use crate::token_type::TokenType;

const SHARDS: usize = 64;
/// Where the shard index starts in a key's hash (see [`TokenCache::shard`]).
const SHARD_SHIFT: u32 = 40;
/// XXH3's default secret size (its minimum is 136).
const SECRET_LEN: usize = 192;

/// What an entry is found by: the keyed 128-bit digest of its token, split in two halves.
/// Computed once per request ([`TokenCache::digest`]) and used for the lookup and, after a
/// miss, for the insert.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    /// The map key (also picks the shard).
    key: u64,
    /// Compared on lookup: an entry whose key matches but whose check does not is absent.
    check: u64,
}

/// A verified token with its caller: a synced user, or a machine.
struct Session {
    /// The other half of the token's [`Digest`].
    check: u64,
    /// An opaque machine token (a secret that the Backend API checks): when it is past its
    /// trust or its user is stale, it is absent (asked again), not expired or stale.
    opaque: bool,
    /// The token's `exp`, copied here so that the check needs no pointer; for an opaque
    /// token, the end of its trust (see [`TokenCache::insert`]).
    exp: i64,
    /// The key-removal epoch the token was verified under.
    key_epoch: u64,
    cached: Cached,
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
    /// XXH3's secret for [`Digest`]: random, made once per cache, never leaves it.
    secret: Box<[u8; SECRET_LEN]>,
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
            secret: random_secret(),
            leeway,
            key_epoch,
        }
    }

    /// The key epoch now; read it before verifying a token that will be inserted.
    pub(crate) fn key_epoch(&self) -> u64 {
        self.key_epoch.load(Ordering::Acquire)
    }

    /// The token's [`Digest`]: XXH3-128 of all its bytes under the cache's secret.
    pub(crate) fn digest(&self, token: &(impl AsRef<[u8]> + ?Sized)) -> Digest {
        let hash = xxhash_rust::xxh3::xxh3_128_with_secret(token.as_ref(), &self.secret[..]);
        Digest {
            key: hash as u64,
            check: (hash >> 64) as u64,
        }
    }

    fn shard(&self, key: u64) -> &Shard {
        // hashbrown takes a bucket from the key's low bits and a 7-bit tag from its top bits;
        // the shard comes from bits 40-45, clear of both. (Taken from the low bits, every key of
        // a shard shared its low 6 bits, so only 1 bucket in 64 could be a home bucket and
        // lookups probed long chains.)
        &self.shards[((key >> SHARD_SHIFT) as usize) % SHARDS]
    }

    /// The session of exactly the token of `digest`, judged at `now`; `is_current` tells
    /// whether its synced user still is. The whole answer is read under the shard's read lock.
    pub(crate) fn get(
        &self,
        digest: Digest,
        now: i64,
        is_current: impl FnOnce(&SyncedUser, &ClerkUser) -> bool,
    ) -> Lookup {
        let shard = self.shard(digest.key);
        let map = match shard.map.read() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(session) = map
            .get(&digest.key)
            .filter(|session| session.check == digest.check)
        else {
            return Lookup::Absent;
        };
        if session.key_epoch != self.key_epoch.load(Ordering::Acquire) {
            return Lookup::Absent;
        }
        if session.exp.saturating_add(self.leeway) < now {
            // An opaque token's trust ran out: the Backend API is asked again.
            return if session.opaque {
                Lookup::Absent
            } else {
                Lookup::Expired
            };
        }
        let hit = match &session.cached {
            Cached::User(answer, user) if !is_current(user, answer) => {
                // An opaque token's trust is the machine verifier's to judge again (from its
                // own cache, without a call while that lasts).
                return if session.opaque {
                    Lookup::Absent
                } else {
                    Lookup::Stale(answer.credential(), session.key_epoch)
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
    pub(crate) fn insert(
        &self,
        digest: Digest,
        cached: Cached,
        exp: i64,
        now: i64,
        key_epoch: u64,
    ) {
        self.put(digest, false, cached, exp, now, key_epoch);
    }

    /// Caches the caller of an opaque machine token (`ak_…`, `mt_…`, `oat_…`) until
    /// `until_ms`, the end of its verification's trust, and never past it: an entry ends in
    /// the second before `until_ms` (so up to a second early), and is then verified again.
    pub(crate) fn insert_opaque(&self, digest: Digest, cached: Cached, until_ms: i64, now: i64) {
        let exp = until_ms
            .div_euclid(1000)
            .saturating_sub(1)
            .saturating_sub(self.leeway);
        if exp.saturating_add(self.leeway) < now {
            return;
        }
        self.put(digest, true, cached, exp, now, self.key_epoch());
    }

    fn put(
        &self,
        digest: Digest,
        opaque: bool,
        cached: Cached,
        exp: i64,
        now: i64,
        key_epoch: u64,
    ) {
        let Digest { key, check } = digest;
        let session = Session {
            check,
            opaque,
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

/// A secret of random bytes for XXH3. Should the system's generator fail (it does not on
/// supported platforms), std's randomly seeded SipHash keys stretch into one instead.
fn random_secret() -> Box<[u8; SECRET_LEN]> {
    let mut secret = Box::new([0u8; SECRET_LEN]);
    if aws_lc_rs::rand::fill(&mut secret[..]).is_err() {
        let state = std::hash::RandomState::new();
        for (i, chunk) in secret.chunks_mut(8).enumerate() {
            let word = state.hash_one(i).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
    secret
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
        match cache.get(cache.digest(token), 100, |_, _| true) {
            Lookup::Hit(Caller::User(user)) => Some(user.user_id().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn exact_token_only() {
        let cache = TokenCache::new(1000, 5, KeyEpoch::default());
        let token = format!("{}.sig-{}", "a".repeat(100), "x".repeat(40));
        cache.insert(cache.digest(&token), session("user_1", 200), 200, 100, 0);
        assert_eq!(found(&cache, &token).as_deref(), Some("user_1"));
        assert_eq!(cache.hits(), 1);
        // Same tail (same signature), other payload: a miss, not the cached claims.
        let forged = format!("{}.sig-{}", "b".repeat(100), "x".repeat(40));
        assert!(matches!(
            cache.get(cache.digest(&forged), 100, |_, _| true),
            Lookup::Absent
        ));
        assert!(matches!(
            cache.get(cache.digest("other"), 100, |_, _| true),
            Lookup::Absent
        ));
        assert_eq!(cache.hits(), 1, "misses are not hits");
    }

    #[test]
    fn expired_and_stale_sessions_are_not_hits() {
        let cache = TokenCache::new(1000, 5, KeyEpoch::default());
        cache.insert(cache.digest("token-1"), session("user_1", 200), 200, 100, 0);
        // Within the leeway, then past it.
        assert!(matches!(
            cache.get(cache.digest("token-1"), 205, |_, _| true),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.get(cache.digest("token-1"), 206, |_, _| true),
            Lookup::Expired
        ));
        match cache.get(cache.digest("token-1"), 100, |_, _| false) {
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
        cache.insert_opaque(
            cache.digest(key),
            session("user_1", 0),
            (now + 30) * 1000,
            now,
        );
        assert_eq!(found_at(&cache, key, now).as_deref(), Some("user_1"));
        // Another key, even one with the same last 32 bytes: a miss.
        let twin = "xk_3beecc9c60adb5f9b850e91a8ee1e992";
        assert!(matches!(
            cache.get(cache.digest(twin), now, |_, _| true),
            Lookup::Absent
        ));
        // Kept as an opaque entry (absent, not expired, once its trust ends).
        let digest = cache.digest(key.as_bytes());
        let shard = cache.shard(digest.key).map.read().unwrap();
        assert!(shard.get(&digest.key).is_some_and(|s| s.opaque));
        drop(shard);
        // The second before `until`, then not at all, and absent (asked again), not expired.
        assert!(found_at(&cache, key, now + 29).is_some());
        assert!(matches!(
            cache.get(cache.digest(key), now + 30, |_, _| true),
            Lookup::Absent
        ));
        // A stale user of an opaque token is absent too: the machine verifier judges again.
        assert!(matches!(
            cache.get(cache.digest(key), now, |_, _| false),
            Lookup::Absent
        ));
        // Trust already over: not cached at all.
        cache.insert_opaque(
            cache.digest("ak_late"),
            session("user_2", 0),
            now * 1000,
            now,
        );
        assert!(matches!(
            cache.get(cache.digest("ak_late"), now, |_, _| true),
            Lookup::Absent
        ));
    }

    fn found_at(cache: &TokenCache, token: &str, now: i64) -> Option<String> {
        match cache.get(cache.digest(token), now, |_, _| true) {
            Lookup::Hit(Caller::User(user)) => Some(user.user_id().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn an_entry_holds_no_token_and_has_a_fixed_size() {
        // The digest, flags, times and the caller's two pointers: nothing that grows with the
        // token, so a session costs the same for an 800-byte JWT as for a 40-byte API key.
        assert!(
            std::mem::size_of::<Session>() <= 64,
            "{}",
            std::mem::size_of::<Session>()
        );
        let cache = TokenCache::new(1000, 5, KeyEpoch::default());
        let long = format!("{}.{}.{}", "h".repeat(50), "p".repeat(600), "s".repeat(342));
        cache.insert(cache.digest(&long), session("user_1", 200), 200, 100, 0);
        assert_eq!(found(&cache, &long).as_deref(), Some("user_1"));
        // One byte changed anywhere (first, middle, last): a miss.
        for at in [0, long.len() / 2, long.len() - 1] {
            let mut other = long.clone().into_bytes();
            other[at] ^= 1;
            assert!(matches!(
                cache.get(cache.digest(&other), 100, |_, _| true),
                Lookup::Absent
            ));
        }
    }

    #[test]
    fn shards_and_buckets_take_different_bits() {
        let cache = TokenCache::new(64_000, 5, KeyEpoch::default());
        // Keys of one shard must still spread over the low bits hashbrown buckets by.
        let mut low_bits = std::collections::HashSet::new();
        let mut in_shard_0 = 0;
        for i in 0..20_000 {
            let key = cache
                .digest(format!("header.payload.signature-{i:08}").as_bytes())
                .key;
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
            cache.insert(
                cache.digest(&format!("old-{i:08}")),
                session("u", 50),
                50,
                100,
                0,
            );
        }
        assert!(cache.len() <= 640, "bounded: {}", cache.len());
        // Live sessions displace expired ones and are not themselves evicted while there is
        // anything expired to drop (100 over 64 shards stays under 10 per shard).
        for i in 0..100 {
            cache.insert(
                cache.digest(&format!("new-{i:08}")),
                session("u", 500),
                500,
                100,
                0,
            );
        }
        for i in 0..100 {
            assert!(found(&cache, &format!("new-{i:08}")).is_some(), "new-{i}");
        }
        assert!(cache.len() <= 640);
    }
}
