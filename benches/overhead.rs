//! Per-request overhead of the layer, every case in one run so ratios hold on a noisy machine.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench overhead
//! ```
//!
//! Cases (same handler, same request shape):
//! - `bare`: the router alone;
//! - `layer/both_hit`: tokens seen before, users synced, cycling through 10,000 users;
//! - `layer/new_token_cached_user`: token cache off, so every request is one RSA
//!   verification, users synced;
//! - `verify_only`: the crate's verifier alone on an uncached token;
//! - `layer/both_hit+ratelimit_memory` and `layer/both_hit+ratelimit_postgres`: the both-hit
//!   path with `RateLimitLayer` inside it (a limit no request reaches), on each store.
//!
//! The layer cases need PostgreSQL (users are synced once, before measuring, into a database
//! named `clerk_sync_bench` created next to `DATABASE_URL`'s); without `DATABASE_URL` they are
//! skipped with a printed reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use clerk_sync::testing::DevIssuer;
use clerk_sync::{
    ClerkSync, ClerkUser, Limit, PgRateLimitStore, PgUserStore, RateLimitLayer, TierLimits,
};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, header};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tower::ServiceExt;

const USERS: usize = 10_000;

async fn handler(user: Option<ClerkUser>) -> &'static str {
    if user.is_some() { "user" } else { "anonymous" }
}

fn request(token: &str) -> Request<Body> {
    Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn bench_pool(url: &str) -> PgPool {
    let admin = PgConnectOptions::from_str(url).unwrap();
    let mut conn = admin.connect().await.unwrap();
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'clerk_sync_bench')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if !exists {
        sqlx::query("CREATE DATABASE clerk_sync_bench")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(admin.database("clerk_sync_bench"))
        .await
        .unwrap();
    clerk_sync::migrate(&pool).await.unwrap();
    pool
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(DevIssuer::start()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Long-lived tokens: the measurement must not outlive them.
    let token = |i: usize| {
        issuer
            .token_for(&format!("user_bench_{i}"))
            .claim("exp", now + 3600)
            .build()
    };

    let bare = Router::new().route("/me", get(handler));
    let first = token(0);
    let mut group = c.benchmark_group("overhead");
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| bare.clone().oneshot(request(&first)))
    });

    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("skipping the layer cases: DATABASE_URL is not set");
        return;
    };
    let pool = rt.block_on(bench_pool(&url));
    let build = |token_cache: u64| {
        let config = issuer.config().build().unwrap();
        ClerkSync::builder(config)
            .store(PgUserStore::new(pool.clone()))
            .token_cache_capacity(token_cache)
            .build()
            .unwrap()
    };
    let cached = build(100_000);
    let uncached = build(0);
    let layered = Router::new()
        .route("/me", get(handler))
        .layer(cached.layer());
    // A limit no request in the bench reaches, so every request takes the allowed path.
    let generous = || TierLimits::new(Limit::new(1_000_000_000, Duration::from_secs(1)));
    let limited = |limiter: RateLimitLayer| {
        Router::new().route("/me", get(handler)).layer(
            tower::ServiceBuilder::new()
                .layer(cached.layer())
                .layer(limiter),
        )
    };
    let limited_memory = limited(RateLimitLayer::per_tier(generous()));
    let limited_postgres = limited(RateLimitLayer::with_store(
        generous(),
        PgRateLimitStore::new(pool.clone()),
    ));
    let verifying = Router::new()
        .route("/me", get(handler))
        .layer(uncached.layer());

    let tokens: Vec<String> = (0..USERS).map(token).collect();
    rt.block_on(async {
        for token in &tokens {
            let ok = layered.clone().oneshot(request(token)).await.unwrap();
            assert!(ok.status().is_success());
            let ok = verifying.clone().oneshot(request(token)).await.unwrap();
            assert!(ok.status().is_success());
        }
    });
    let before = (cached.stats(), uncached.stats());

    let mut i = 0;
    group.bench_function("layer/both_hit", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            layered.clone().oneshot(request(&tokens[i]))
        })
    });
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
    group.bench_function("layer/new_token_cached_user", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            verifying.clone().oneshot(request(&tokens[i]))
        })
    });
    let verifier = uncached.verifier().clone();
    group.bench_function("verify_only", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % USERS;
            let verifier = verifier.clone();
            let token = tokens[i].clone();
            async move { verifier.verify(&token).await.unwrap() }
        })
    });
    group.finish();

    // The cases measured what they claim: no SQL while measuring, and no cache hits where
    // every request must verify.
    let (cached_after, uncached_after) = (cached.stats(), uncached.stats());
    assert_eq!(
        cached_after.upserts_ok, before.0.upserts_ok,
        "both_hit ran SQL"
    );
    assert_eq!(
        cached_after.tokens_verified, before.0.tokens_verified,
        "both_hit verified"
    );
    assert_eq!(
        uncached_after.upserts_ok, before.1.upserts_ok,
        "new_token ran SQL"
    );
    assert_eq!(
        uncached_after.token_cache_hits, 0,
        "new_token hit the token cache"
    );
    println!(
        "checked: no SQL while measuring; {} RSA verifications in the uncached cases",
        uncached_after.tokens_verified - before.1.tokens_verified
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = overhead
}
criterion_main!(benches);
