//! Per-request overhead of the layer, every case in one run so ratios hold on a noisy machine.
//! At the end the bench prints criterion's medians, their ratios, and the paired ratios (see
//! [`Pair`]) that the targets are judged on.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench overhead
//! ```
//!
//! Every router is finalized with `.with_state(())`, as `axum::serve` does
//! (`into_make_service`): without it, axum boxes the handler and applies the layers again on
//! every call, a cost of the bench rather than of a server (figures before 2026-12-03
//! include it).
//!
//! Cases (same handler, same request shape, in-process `oneshot` calls):
//! - `bare`: the router alone (with a database, measured paired with `layer/both_hit`: each
//!   sample runs a block of each and times its own);
//! - `layer/both_hit`: tokens seen before, users synced, cycling through 10,000 users each
//!   with its own token, as a server sees them (one hot key would hide cache misses);
//! - `layer/new_token_cached_user`: a token the layer has not seen, user synced: the session
//!   cache is off (`token_cache_capacity(0)`), so every request is one RSA verification and
//!   one synced-user lookup (pre-minting a fresh token per iteration is not affordable);
//! - `layer/new_user`: a token and a user never seen, against the real PostgreSQL: one RSA
//!   verification and one upsert; `upsert/round_trip` is that upsert alone, for the ratio (the
//!   two run interleaved: each iteration does both and times its own);
//! - `verify_only`: the crate's verifier on an uncached token; `rsa_floor`: one raw aws-lc
//!   RSA-2048 PKCS#1 v1.5 verification with a pre-parsed key, the floor of any new token
//!   (with a database, measured paired with `layer/new_token_cached_user`);
//! - `peer/jwt_authorizer`: the same handler behind `jwt-authorizer` 0.15 (axum 0.7, its
//!   `RegisteredClaims`, the same PEM key and tokens, issuer checked);
//! - `peer/clerk_rs`: the same handler behind `clerk-rs` 0.5's `ClerkLayer` (axum 0.8), the
//!   same key (from the issuer's JWKS, held by a `JwksProvider`) and tokens;
//! - `layer/both_hit+ratelimit_memory`, `layer/both_hit+ratelimit_postgres`,
//!   `layer/both_hit+ratelimit_redis`: the both-hit path with `RateLimitLayer` inside it, on
//!   each store (a limit no request reaches); the Redis case (the local Redis, `REDIS_URL`;
//!   skipped with a printed reason when it is down) runs paired with both-hit and the
//!   Postgres store, for the ratio of the two stores' added costs;
//! - `layer/api_key_hit`: an API key seen before whose user is synced, 10,000 keys of 10,000
//!   users rotating, on a layer that `accepts` API keys (measured paired with
//!   `layer/both_hit`; the machine-token TTL is raised to an hour so that no entry expires
//!   during the run);
//! - `layer/guarded_hit`: the both-hit path (tokens with an active organization and a
//!   permission, 10,000 users rotating) behind `clerk.require(Check::permission(..))`,
//!   paired with the same tokens on the unguarded layer;
//! - `layer/api_key_miss`: an API key never seen, for a user never seen: one `FakeClerkApi`
//!   verify round trip on loopback and one upsert; `api_key/round_trip` is that call and an
//!   upsert of another new user done directly, interleaved with it like `layer/new_user`.
//!
//! Everything but `bare`, `verify_only`, `rsa_floor` and the peer needs PostgreSQL (a database
//! named `clerk_sync_bench` is created next to `DATABASE_URL`'s); without `DATABASE_URL` those
//! cases are skipped with a printed reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clerk_sync::authz::Check;
use clerk_sync::store::{UserProfile, UserStore};
use clerk_sync::testing::{DevIssuer, FakeClerkApi};
use clerk_sync::{
    ClerkSync, ClerkUser, Limit, PgRateLimitStore, PgUserStore, ProfileSource, RateLimitLayer,
    RedisRateLimitStore, TierLimits, TokenType,
};
use criterion::Criterion;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

mod common;

use common::{bench_pool, request};

const USERS: usize = 10_000;

async fn handler(user: Option<ClerkUser>) -> &'static str {
    if user.is_some() { "user" } else { "anonymous" }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Transactions committed in the bench database so far. An unnamed (unprepared) statement is
/// two protocol round trips, Parse/Describe/Sync then Bind/Execute/Sync, and each Sync
/// closes an implicit transaction: one upsert counts as two here.
async fn commits(pool: &PgPool) -> i64 {
    // The statistics are per backend until flushed; ask for a fresh snapshot.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let pairs = overhead(&mut criterion);
    criterion.final_summary();
    if std::env::args().any(|arg| arg == "--bench") {
        print_ratios(&target_dir().join("criterion").join("overhead"));
        print_pairs(&pairs);
    }
}

/// Two cases measured in the same samples: every sample of either case runs a block of each
/// and criterion times only its own, while this keeps the ratio of the two blocks, sample by
/// sample. Two criterion medians are taken minutes apart and move with the machine (20% and
/// more here); a ratio within one sample does not.
struct Pair {
    label: &'static str,
    target: &'static str,
    ratios: Vec<f64>,
    iterations: u64,
}

impl Pair {
    fn new(label: &'static str, target: &'static str) -> Self {
        Self {
            label,
            target,
            ratios: Vec::new(),
            iterations: 0,
        }
    }

    /// One sample: `iters` of the numerator took `numerator`, as many of the denominator
    /// `denominator`.
    fn add(&mut self, iters: u64, numerator: Duration, denominator: Duration) {
        self.iterations += iters;
        self.ratios
            .push(numerator.as_secs_f64() / denominator.as_secs_f64().max(1e-12));
    }

    fn median(&self) -> Option<f64> {
        let mut ratios = self.ratios.clone();
        ratios.sort_by(f64::total_cmp);
        ratios.get(ratios.len() / 2).copied()
    }
}

/// One timed block of a paired sample: `iters` requests through `app`, each with the next of
/// `tokens` (rotating from `*next`).
async fn block(app: &Router, tokens: &[String], next: &mut usize, iters: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        *next = (*next + 1) % tokens.len();
        let response = app.clone().oneshot(request(&tokens[*next])).await;
        std::hint::black_box(response.unwrap());
    }
    started.elapsed()
}

fn print_pairs(pairs: &[Pair]) {
    println!("paired ratios (median of per-sample ratios; the figures the targets are judged on)");
    for pair in pairs {
        if let Some(ratio) = pair.median() {
            println!(
                "  {:<44} {ratio:>8.2}×   target {}   ({} samples, {} iterations each side)",
                pair.label,
                pair.target,
                pair.ratios.len(),
                pair.iterations
            );
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

fn overhead(c: &mut Criterion) -> Vec<Pair> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(DevIssuer::start()).unwrap();
    let now = unix_now();
    // Long-lived tokens: the measurement must not outlive them.
    let token = |user: &str| issuer.token_for(user).claim("exp", now + 3600).build();
    let tokens: Vec<String> = (0..USERS)
        .map(|i| token(&format!("user_bench_{i}")))
        .collect();

    let bare = Router::new().route("/me", get(handler)).with_state(());
    let mut group = c.benchmark_group("overhead");
    let mut i = 0;
    let database_url = std::env::var("DATABASE_URL").ok();
    if database_url.is_none() {
        // With a database, `bare` is measured paired with `layer/both_hit` (below).
        group.bench_function("bare", |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % USERS;
                bare.clone().oneshot(request(&tokens[i]))
            })
        });
    }

    // The floor: one RSA verification of the token's signing input, key parsed once.
    let (signing_input, signature) = tokens[0].rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let pem = issuer.public_key_pem();
    let key = common::rsa_key(&pem);
    let rsa_verify = || {
        key.verify_sig(signing_input.as_bytes(), &signature)
            .unwrap()
    };
    if database_url.is_none() {
        // With a database, `rsa_floor` is measured paired with `layer/new_token_cached_user`.
        group.bench_function("rsa_floor", |b| b.iter(rsa_verify));
    }

    // The peer: jwt-authorizer on axum 0.7, same key, same tokens, issuer checked.
    let peer = rt.block_on(peer::router(&pem, &issuer.issuer()));
    group.bench_function("peer/jwt_authorizer", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            peer::call(peer.clone(), &tokens[i])
        })
    });

    // The second peer: clerk-rs, same key (from the issuer's JWKS), same tokens.
    let clerk_rs = clerk_rs_peer::router(&issuer.jwks());
    group.bench_function("peer/clerk_rs", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            clerk_rs_peer::call(clerk_rs.clone(), &tokens[i])
        })
    });

    let Some(url) = database_url else {
        println!("skipping the layer cases: DATABASE_URL is not set");
        return Vec::new();
    };
    // sqlx pings a pooled connection before handing it out by default: one more round trip
    // (and one more committed "statement") per upsert. Measured with it off, as recommended
    // for the store's pool (see BENCHMARKS.md).
    let pool = rt.block_on(bench_pool(
        &url,
        PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false),
    ));
    // The Backend API for API keys: the fake on loopback. Profiles from claims only (as
    // without a secret key): the bench users are unknown to the fake. Unbounded verification
    // budget (every key comes from one client here) and an hour of trust, so that the hit case
    // never meets an expired entry.
    let fake = rt.block_on(FakeClerkApi::start(0)).unwrap();
    let run = format!("{:x}", unix_now());
    let keys: Vec<String> = (0..USERS)
        .map(|i| {
            let key = format!("ak_{run}{i:024x}");
            let answer = FakeClerkApi::api_key_answer(&format!("user_bench_{i}"));
            fake.add_machine_token(&key, TokenType::ApiKey, answer);
            key
        })
        .collect();
    let build = |token_cache: u64| {
        let config = issuer.config().build().unwrap();
        ClerkSync::builder(config, PgUserStore::new(pool.clone()))
            .token_cache_capacity(token_cache)
            .clerk_api(fake.client())
            .profile_source(ProfileSource::Claims)
            .machine_token_budget(u32::MAX, u32::MAX)
            .machine_token_cache_ttl(Duration::from_secs(3600))
            .build()
            .unwrap()
    };
    let cached = build(100_000);
    let uncached = build(0);
    let layered = Router::new()
        .route("/me", get(handler))
        .layer(cached.layer())
        .with_state(());
    // A limit of a tier's size that no request in the bench reaches (10,000 users rotating
    // at well under a million requests per second are each well under 100 per second), so
    // every request takes the allowed path.
    let generous =
        || TierLimits::new(Limit::new(1_000, Duration::from_secs(1)).expect("a valid limit"));
    let limited = |limiter: RateLimitLayer| {
        Router::new()
            .route("/me", get(handler))
            .layer(
                tower::ServiceBuilder::new()
                    .layer(cached.layer())
                    .layer(limiter),
            )
            .with_state(())
    };
    let limited_memory = limited(RateLimitLayer::per_tier(generous()));
    let limited_postgres = limited(RateLimitLayer::with_store(
        generous(),
        PgRateLimitStore::new(pool.clone()),
    ));
    // Redis at REDIS_URL (default the local one), keys under a prefix of this run.
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let limited_redis = rt.block_on(async {
        let store = RedisRateLimitStore::new(&redis_url)
            .unwrap()
            .key_prefix(format!("clerk_sync_bench:{run}:"));
        match store.ping().await {
            Ok(()) => Some(limited(RateLimitLayer::with_store(generous(), store))),
            Err(error) => {
                println!("skipping layer/both_hit+ratelimit_redis: {error}");
                None
            }
        }
    });
    let verifying = Router::new()
        .route("/me", get(handler))
        .layer(uncached.layer())
        .with_state(());
    // Session tokens with an active organization, for the guard.
    let org_tokens: Vec<String> = (0..USERS)
        .map(|i| {
            issuer
                .token_for(&format!("user_bench_{i}"))
                .claim("exp", now + 3600)
                .organization("org_bench", "bench", "member", &["org:invoices:read"])
                .build()
        })
        .collect();
    // One `layer` call for the whole stack: axum boxes each layered route once per call, so
    // a guard added with a second `.layer(..)` would also measure one more boxing.
    // Its own `ClerkSync` (and token cache), so that these 10,000 sessions do not grow the
    // cache the other cases measure.
    let org_clerk = build(100_000);
    let org_layered = Router::new()
        .route("/me", get(handler))
        .layer(org_clerk.layer())
        .with_state(());
    let guarded = Router::new()
        .route("/me", get(handler))
        .layer(
            tower::ServiceBuilder::new()
                .layer(org_clerk.layer())
                .layer(org_clerk.require(Check::permission("org:invoices:read"))),
        )
        .with_state(());
    let with_keys = Router::new()
        .route("/me", get(handler))
        .layer(
            cached
                .layer()
                .accepts([TokenType::SessionToken, TokenType::ApiKey]),
        )
        .with_state(());

    rt.block_on(async {
        for token in &tokens {
            let ok = layered.clone().oneshot(request(token)).await.unwrap();
            assert!(ok.status().is_success());
            let ok = verifying.clone().oneshot(request(token)).await.unwrap();
            assert!(ok.status().is_success());
        }
        for token in &org_tokens {
            let ok = guarded.clone().oneshot(request(token)).await.unwrap();
            assert!(ok.status().is_success());
        }
        for key in &keys {
            let ok = with_keys.clone().oneshot(request(key)).await.unwrap();
            assert!(ok.status().is_success());
        }
    });
    let key_calls_before = fake.verify_requests(TokenType::ApiKey);
    let before = (cached.stats(), uncached.stats());

    // The headline ratio, measured paired: every sample of either case runs a block of bare
    // requests and a block of both-hit requests, and times its own block, so drift of the
    // machine (20% between runs here) hits both alike.
    let mut hit_pair = Pair::new("layer/both_hit ÷ bare", "≤ 2.5 (stretch ≤ 1.5)");
    let mut paired = |b: &mut criterion::Bencher<'_>, time_layered: bool| {
        b.iter_custom(|iters| {
            let [bare_time, layered_time] =
                [&bare, &layered].map(|app| rt.block_on(block(app, &tokens, &mut i, iters)));
            hit_pair.add(iters, layered_time, bare_time);
            if time_layered {
                layered_time
            } else {
                bare_time
            }
        })
    };
    group.bench_function("bare", |b| paired(b, false));
    group.bench_function("layer/both_hit", |b| paired(b, true));
    // A cached API key against a cached session, paired the same way.
    let mut key_pair = Pair::new("layer/api_key_hit ÷ layer/both_hit", "≤ 1.1");
    let mut paired = |b: &mut criterion::Bencher<'_>, time_keys: bool| {
        b.iter_custom(|iters| {
            let sessions = rt.block_on(block(&layered, &tokens, &mut i, iters));
            let api_keys = rt.block_on(block(&with_keys, &keys, &mut i, iters));
            key_pair.add(iters, api_keys, sessions);
            if time_keys { api_keys } else { sessions }
        })
    };
    group.bench_function("layer/api_key_hit", |b| paired(b, true));
    // The guard: the same organization tokens with and without `require`.
    let mut guard_pair = Pair::new("layer/guarded_hit ÷ unguarded (same tokens)", "≤ 1.1");
    let mut paired = |b: &mut criterion::Bencher<'_>, time_guarded: bool| {
        b.iter_custom(|iters| {
            let plain = rt.block_on(block(&org_layered, &org_tokens, &mut i, iters));
            let checked = rt.block_on(block(&guarded, &org_tokens, &mut i, iters));
            guard_pair.add(iters, checked, plain);
            if time_guarded { checked } else { plain }
        })
    };
    group.bench_function("layer/guarded_hit", |b| paired(b, true));
    let key_calls_after_hits = fake.verify_requests(TokenType::ApiKey);
    group.bench_function("layer/both_hit+ratelimit_memory", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            limited_memory.clone().oneshot(request(&tokens[i]))
        })
    });
    group.bench_function("layer/both_hit+ratelimit_postgres", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            limited_postgres.clone().oneshot(request(&tokens[i]))
        })
    });
    // The Redis store's added cost against the Postgres store's: every sample runs a block
    // of the both-hit path alone, one with each shared store, and keeps
    // (redis − hit) ÷ (postgres − hit).
    // And against the floor of any Redis store: one `PING` round trip on a connection of
    // the bench's own (the redis crate's multiplexed connection, as the store uses).
    let mut redis_pair = Pair::new("ratelimit_redis added ÷ ratelimit_postgres added", "≤ 0.25");
    let mut ping_pair = Pair::new("ratelimit_redis added ÷ redis PING round trip", "");
    if let Some(limited_redis) = &limited_redis {
        let mut ping = rt.block_on(async {
            redis::Client::open(redis_url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        });
        group.bench_function("layer/both_hit+ratelimit_redis", |b| {
            b.iter_custom(|iters| {
                let [hit, postgres, redis] = [&layered, &limited_postgres, limited_redis]
                    .map(|app| rt.block_on(block(app, &tokens, &mut i, iters)));
                let pings = rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let pong: String = redis::cmd("PING").query_async(&mut ping).await.unwrap();
                        std::hint::black_box(pong);
                    }
                    started.elapsed()
                });
                redis_pair.add(
                    iters,
                    redis.saturating_sub(hit),
                    postgres.saturating_sub(hit),
                );
                ping_pair.add(iters, redis.saturating_sub(hit), pings);
                redis
            })
        });
    }
    // Paired like bare and both_hit: a block of raw RSA verifications and a block of
    // new-token requests in every sample.
    let mut token_pair = Pair::new("layer/new_token_cached_user ÷ rsa_floor", "≤ 1.4");
    let mut paired = |b: &mut criterion::Bencher<'_>, time_layer: bool| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                rsa_verify();
            }
            let rsa = started.elapsed();
            let layer = rt.block_on(block(&verifying, &tokens, &mut i, iters));
            token_pair.add(iters, layer, rsa);
            if time_layer { layer } else { rsa }
        })
    };
    group.bench_function("rsa_floor", |b| paired(b, false));
    group.bench_function("layer/new_token_cached_user", |b| paired(b, true));
    let verifier = uncached.verifier().clone();
    group.bench_function("verify_only", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            let verifier = verifier.clone();
            let token = tokens[i].clone();
            async move { verifier.verify(&token).await.unwrap() }
        })
    });

    // New users: each iteration a user never seen, with its own token minted outside the
    // timed region. A run-unique prefix keeps them new across bench runs.
    //
    // The two database cases run interleaved: every iteration of either case does one
    // `layer/new_user` request AND one bare upsert of another new user, and times only its
    // own half. Run one after the other, the second case met a bigger table, other
    // checkpoints and other autovacuum runs, and the ratio moved by 10-15% between runs.
    let mut minted = 0_u64;
    let mut fresh = |n: u64| -> Vec<(String, UserProfile)> {
        (0..n)
            .map(|_| {
                minted += 1;
                (
                    token(&format!("user_new_{run}_{minted}")),
                    UserProfile::new(format!("user_raw_{run}_{minted}")),
                )
            })
            .collect()
    };
    let store = PgUserStore::new(pool.clone());
    let commits_before = rt.block_on(commits(&pool));
    let upserts_before = cached.stats().upserts_ok;
    let mut new_users = 0_u64;
    let mut new_user_pair = Pair::new("layer/new_user ÷ upsert/round_trip", "≤ 1.2");
    let mut interleaved = |b: &mut criterion::Bencher<'_>, time_layer: bool| {
        b.iter_custom(|iters| {
            let users = fresh(iters);
            new_users += iters;
            let (layer_time, upsert_time) = rt.block_on(async {
                let (mut layer_time, mut upsert_time) = (Duration::ZERO, Duration::ZERO);
                for (token, profile) in &users {
                    let started = Instant::now();
                    let response = layered.clone().oneshot(request(token)).await.unwrap();
                    layer_time += started.elapsed();
                    assert!(response.status().is_success());
                    let started = Instant::now();
                    store.upsert(profile).await.unwrap();
                    upsert_time += started.elapsed();
                }
                (layer_time, upsert_time)
            });
            new_user_pair.add(iters, layer_time, upsert_time);
            if time_layer { layer_time } else { upsert_time }
        })
    };
    group.sample_size(10);
    group.bench_function("upsert/round_trip", |b| interleaved(b, false));
    group.bench_function("layer/new_user", |b| interleaved(b, true));

    // New API keys of new users, interleaved with the same work done directly: a verify call
    // to the fake and an upsert of another new user.
    let direct_api = fake.client();
    let mut key_minted = 0_u64;
    let mut fresh_keys = |n: u64| -> Vec<(String, String, UserProfile)> {
        (0..n)
            .map(|_| {
                key_minted += 1;
                let mut pair = [0, 1].map(|side| {
                    let key = format!("ak_{run}miss{side}{key_minted:016x}");
                    let user = format!("user_key_{run}_{side}_{key_minted}");
                    fake.add_machine_token(
                        &key,
                        TokenType::ApiKey,
                        FakeClerkApi::api_key_answer(&user),
                    );
                    (key, user)
                });
                let (direct_key, direct_user) = std::mem::take(&mut pair[1]);
                let (layer_key, _) = std::mem::take(&mut pair[0]);
                (layer_key, direct_key, UserProfile::new(direct_user))
            })
            .collect()
    };
    let mut new_keys = 0_u64;
    let upserts_before_keys = cached.stats().upserts_ok;
    let mut key_miss_pair = Pair::new("layer/api_key_miss ÷ api_key/round_trip", "≤ 1.2");
    let mut interleaved = |b: &mut criterion::Bencher<'_>, time_layer: bool| {
        b.iter_custom(|iters| {
            let batch = fresh_keys(iters);
            new_keys += iters;
            let (layer_time, direct_time) = rt.block_on(async {
                let (mut layer_time, mut direct_time) = (Duration::ZERO, Duration::ZERO);
                for (layer_key, direct_key, profile) in &batch {
                    let started = Instant::now();
                    let response = with_keys.clone().oneshot(request(layer_key)).await.unwrap();
                    layer_time += started.elapsed();
                    assert!(response.status().is_success());
                    let started = Instant::now();
                    let verdict = direct_api
                        .verify_machine_token(TokenType::ApiKey, direct_key)
                        .await
                        .unwrap();
                    assert!(matches!(verdict, clerk_sync::machine::Verdict::Valid(_)));
                    store.upsert(profile).await.unwrap();
                    direct_time += started.elapsed();
                }
                (layer_time, direct_time)
            });
            key_miss_pair.add(iters, layer_time, direct_time);
            if time_layer { layer_time } else { direct_time }
        })
    };
    group.bench_function("api_key/round_trip", |b| interleaved(b, false));
    group.bench_function("layer/api_key_miss", |b| interleaved(b, true));
    group.finish();
    assert_eq!(
        key_calls_after_hits, key_calls_before,
        "api_key_hit called the Backend API"
    );
    assert_eq!(
        fake.verify_requests(TokenType::ApiKey) - key_calls_after_hits,
        2 * new_keys,
        "one verify call per new key, on each side"
    );
    assert_eq!(
        cached.stats().upserts_ok - upserts_before_keys,
        new_keys,
        "one upsert per new key's user"
    );
    let statements = rt.block_on(commits(&pool)) - commits_before;
    let rows: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT count(*) FROM users WHERE id LIKE $1")
                .bind(format!("user_new_{run}_%"))
                .fetch_one(&pool),
        )
        .unwrap();

    // The cases measured what they claim.
    let (cached_after, uncached_after) = (cached.stats(), uncached.stats());
    assert_eq!(
        cached_after.upserts_ok - upserts_before,
        new_users + new_keys,
        "one upsert per new user (and per new key's user)"
    );
    assert_eq!(
        cached_after.tokens_verified - before.0.tokens_verified,
        new_users,
        "both_hit verified no token; each new user's token verified once"
    );
    assert_eq!(
        uncached_after.upserts_ok, before.1.upserts_ok,
        "new_token ran SQL"
    );
    assert_eq!(
        uncached_after.token_cache_hits, 0,
        "new_token hit the token cache"
    );
    assert_eq!(
        rows,
        i64::try_from(new_users).unwrap(),
        "one row written per new user"
    );
    println!(
        "checked: no SQL in the hit and new-token cases; layer/new_user: {new_users} new users, \
         {new_users} upserts (one statement each), {rows} rows; with as many bare upserts, \
         {statements} implicit transactions (2 per unnamed statement: prepare and execute round \
         trips)"
    );
    vec![
        hit_pair,
        key_pair,
        guard_pair,
        token_pair,
        new_user_pair,
        key_miss_pair,
        redis_pair,
        ping_pair,
    ]
}

/// The same handler behind jwt-authorizer 0.15 (which is built on axum 0.7).
mod peer {
    use axum07::Router;
    use axum07::body::Body;
    use axum07::routing::get;
    use jwt_authorizer::{
        Authorizer, IntoLayer, JwtAuthorizer, JwtClaims, RegisteredClaims, Validation,
    };
    use tower::ServiceExt;

    async fn handler(JwtClaims(_claims): JwtClaims<RegisteredClaims>) -> &'static str {
        "user"
    }

    pub(super) async fn router(pem: &str, issuer: &str) -> Router {
        let authorizer: Authorizer<RegisteredClaims> = JwtAuthorizer::from_rsa_pem_text(pem)
            .validation(Validation::new().iss(&[issuer]).leeway(5))
            .build()
            .await
            .unwrap();
        Router::new()
            .route("/me", get(handler))
            .layer(authorizer.into_layer())
    }

    pub(super) async fn call(router: Router, token: &str) -> http::Response<Body> {
        let request = http::Request::get("/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert!(response.status().is_success());
        response
    }
}

/// The same handler behind clerk-rs 0.5's `ClerkLayer` (axum 0.8), its keys from a
/// `JwksProvider` that holds the dev issuer's JWKS (clerk-rs would fetch Clerk's Backend API).
mod clerk_rs_peer {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use clerk_rs::validators::axum::ClerkLayer;
    use clerk_rs::validators::jwks::{JwksKey, JwksProvider, JwksProviderError};
    use tower::ServiceExt;

    /// The issuer's published keys, as clerk-rs's own providers hold them once fetched.
    struct Keys(Vec<JwksKey>);

    #[async_trait::async_trait]
    impl JwksProvider for Keys {
        type Error = JwksProviderError;

        async fn get_key(&self, kid: &str) -> Result<JwksKey, Self::Error> {
            self.0
                .iter()
                .find(|key| key.kid == kid)
                .cloned()
                .ok_or(JwksProviderError::UnknownKey)
        }
    }

    async fn handler() -> &'static str {
        "user"
    }

    pub(super) fn router(jwks: &serde_json::Value) -> Router {
        let keys: Vec<JwksKey> = serde_json::from_value(jwks["keys"].clone()).unwrap();
        Router::new()
            .route("/me", get(handler))
            .layer(ClerkLayer::new(Keys(keys), None, false))
            .with_state(())
    }

    pub(super) async fn call(router: Router, token: &str) -> http::Response<Body> {
        let response = router.oneshot(super::request(token)).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response
    }
}

/// Median of each case from criterion's `new/estimates.json`, then the ratios the targets
/// are stated in.
fn print_ratios(group_dir: &Path) {
    let median = |case: &str| -> Option<f64> {
        let dir = group_dir.join(case.replace('/', "_")).join("new");
        let text = std::fs::read_to_string(dir.join("estimates.json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["median"]["point_estimate"].as_f64()
    };
    let cases = [
        "bare",
        "layer/both_hit",
        "layer/both_hit+ratelimit_memory",
        "layer/both_hit+ratelimit_postgres",
        "layer/both_hit+ratelimit_redis",
        "layer/api_key_hit",
        "layer/guarded_hit",
        "layer/api_key_miss",
        "api_key/round_trip",
        "layer/new_token_cached_user",
        "layer/new_user",
        "upsert/round_trip",
        "verify_only",
        "rsa_floor",
        "peer/jwt_authorizer",
        "peer/clerk_rs",
    ];
    println!("\nmedians (this run)");
    for case in cases {
        if let Some(ns) = median(case) {
            println!("  {case:<36} {:>12.3} µs", ns / 1000.0);
        }
    }
    let ratio = |label: &str, a: &str, b: &str, target: &str| {
        if let (Some(a), Some(b)) = (median(a), median(b)) {
            println!("  {label:<44} {:>8.2}×   target {target}", a / b);
        }
    };
    println!("ratios of medians (taken minutes apart: drift of the machine shows here)");
    ratio(
        "layer/both_hit ÷ bare",
        "layer/both_hit",
        "bare",
        "≤ 2.5 (stretch ≤ 1.5)",
    );
    ratio(
        "peer/jwt_authorizer ÷ layer/both_hit",
        "peer/jwt_authorizer",
        "layer/both_hit",
        "≥ 20",
    );
    ratio(
        "peer/clerk_rs ÷ layer/both_hit",
        "peer/clerk_rs",
        "layer/both_hit",
        "≥ 20",
    );
    ratio(
        "layer/new_token_cached_user ÷ rsa_floor",
        "layer/new_token_cached_user",
        "rsa_floor",
        "≤ 1.4",
    );
    ratio(
        "layer/new_token_cached_user ÷ peer",
        "layer/new_token_cached_user",
        "peer/jwt_authorizer",
        "≤ 1.0",
    );
    ratio(
        "layer/new_user ÷ upsert/round_trip",
        "layer/new_user",
        "upsert/round_trip",
        "≤ 1.2",
    );
    ratio("verify_only ÷ rsa_floor", "verify_only", "rsa_floor", "");
    ratio(
        "ratelimit_memory ÷ layer/both_hit",
        "layer/both_hit+ratelimit_memory",
        "layer/both_hit",
        "≤ 1.2",
    );
}
