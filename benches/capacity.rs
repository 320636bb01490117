//! Concurrency and memory of the layer (not criterion: each figure is one measured event).
//!
//! 1. **Burst of first requests**: 1,000 concurrent requests for 100 users never seen (10
//!    requests each, each with its own token) against the real PostgreSQL; how long until all
//!    are served, and how many upserts reached the store (must be 100). Five rounds.
//! 2. **Memory**: resident-set growth (`VmRSS`) for 100,000 cached users with one session each,
//!    then for 100,000 more sessions of the same users; per user and per session. The store is
//!    an in-memory stand-in here (memory of the caches is the question, not the database).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench capacity
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clerk_sync::store::{InvalidationChannel, StoreFuture, UpsertOutcome, UserProfile, UserStore};
use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkSync, ClerkUser, PgUserStore, SessionClaims};
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

mod common;

use common::{bench_pool, request};

async fn handler(user: ClerkUser) -> String {
    user.tier().to_owned()
}

/// Counts the upserts that reach the wrapped store.
struct Counting<S> {
    inner: S,
    calls: Arc<AtomicU64>,
}

impl<S: UserStore> UserStore for Counting<S> {
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.upsert(profile)
    }

    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>> {
        self.inner.invalidation_channel()
    }
}

/// Answers every upsert at once: the memory measurement is about the caches.
struct Instant_;

impl UserStore for Instant_ {
    fn upsert<'a>(&'a self, _profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        Box::pin(async {
            Ok(UpsertOutcome::Active {
                tier: "free".to_owned(),
                inserted: true,
                has_email: true,
            })
        })
    }

    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>> {
        None
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let issuer = DevIssuer::start().await.unwrap();
        match std::env::var("DATABASE_URL") {
            Ok(url) => burst(&issuer, &url).await,
            Err(_) => println!("burst skipped: DATABASE_URL is not set"),
        }
        memory(&issuer).await;
    });
}

async fn burst(issuer: &DevIssuer, url: &str) {
    // The default pool size of many apps; the burst must not need more.
    let pool = bench_pool(url, PgPoolOptions::new().max_connections(10)).await;
    let calls = Arc::new(AtomicU64::new(0));
    let clerk = ClerkSync::builder(
        issuer.config().build().unwrap(),
        Counting {
            inner: PgUserStore::new(pool.clone()),
            calls: calls.clone(),
        },
    )
    .build()
    .unwrap();
    let app = Router::new()
        .route("/me", get(handler))
        .layer(clerk.layer());
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    println!("burst: 1,000 concurrent first requests for 100 new users (10 tokens each)");
    let mut times = Vec::new();
    for round in 0..5 {
        let tokens: Vec<String> = (0..1_000)
            .map(|i| issuer.token(&format!("user_burst_{run}_{round}_{}", i % 100)))
            .collect();
        let before = calls.load(Ordering::SeqCst);
        let started = Instant::now();
        let mut requests = tokio::task::JoinSet::new();
        for token in tokens {
            let app = app.clone();
            requests.spawn(async move {
                let response = app.oneshot(request(&token)).await.unwrap();
                (response.status(), started.elapsed())
            });
        }
        let mut slowest = Duration::ZERO;
        while let Some(result) = requests.join_next().await {
            let (status, took) = result.unwrap();
            assert!(status.is_success(), "{status}");
            slowest = slowest.max(took);
        }
        let upserts = calls.load(Ordering::SeqCst) - before;
        assert_eq!(upserts, 100, "one upsert per new user");
        println!(
            "  round {round}: all 1,000 served in {:.1} ms, {upserts} upserts",
            slowest.as_secs_f64() * 1000.0
        );
        times.push(slowest);
    }
    times.sort();
    println!(
        "  median {:.1} ms, max {:.1} ms",
        times[2].as_secs_f64() * 1000.0,
        times[4].as_secs_f64() * 1000.0
    );
}

async fn memory(issuer: &DevIssuer) {
    const N: usize = 100_000;
    // Room for every session of the measurement (the default holds 100,000).
    let clerk = ClerkSync::builder(issuer.config().build().unwrap(), Instant_)
        .token_cache_capacity(4 * N as u64)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/me", get(handler))
        .layer(clerk.layer());
    let mint = |generation: usize| -> Vec<String> {
        (0..N)
            .map(|i| {
                issuer
                    .token_for(&format!("user_mem_{i:06}"))
                    .claim("gen", generation as u64)
                    .build()
            })
            .collect()
    };
    println!("memory: minting 2 × 100,000 tokens (RSA signatures; takes a while)");
    let first = mint(1);
    let second = mint(2);
    let token_bytes = first.iter().map(String::len).sum::<usize>() / N;

    let base = rss_kib();
    serve(&app, &first).await;
    let with_users = rss_kib();
    serve(&app, &second).await;
    let with_sessions = rss_kib();
    let stats = clerk.stats();
    assert_eq!(stats.upserts_ok, N as u64, "one sync per user");
    assert_eq!(stats.tokens_verified, 2 * N as u64);

    let per_pair = (with_users - base) as f64 * 1024.0 / N as f64;
    let per_session = (with_sessions - with_users) as f64 * 1024.0 / N as f64;
    println!("  tokens are {token_bytes} bytes on average");
    println!(
        "  100,000 users with one session each: +{:.1} MiB RSS ({per_pair:.0} bytes per user + session)",
        (with_users - base) as f64 / 1024.0
    );
    println!(
        "  100,000 more sessions, same users:    +{:.1} MiB RSS ({per_session:.0} bytes per session)",
        (with_sessions - with_users) as f64 / 1024.0
    );
    println!(
        "  so about {:.0} bytes per cached user",
        (per_pair - per_session).max(0.0)
    );
    // What part of a session is its parsed claims: the same payloads parsed and held.
    let before_claims = rss_kib();
    let claims: Vec<SessionClaims> = second
        .iter()
        .map(|token| {
            let payload = token.split('.').nth(1).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        })
        .collect();
    let per_claims = (rss_kib() - before_claims) as f64 * 1024.0 / N as f64;
    println!(
        "  of a session, its parsed claims alone: {per_claims:.0} bytes ({} custom claims)",
        claims[0].custom.len()
    );
    println!("  {clerk:?}");
}

/// Every token through `app` once. Tokens are borrowed, not consumed: memory they freed would
/// be reused by the caches and hide part of the growth.
async fn serve(app: &Router, tokens: &[String]) {
    for token in tokens {
        let response = app.clone().oneshot(request(token)).await.unwrap();
        assert!(response.status().is_success());
    }
}
