//! The rate limiter behind the sync layer, on both stores, against real PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use clerk_sync::ratelimit::{AnonymousPolicy, StoreFailurePolicy};
use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkSync, ClerkUser, Limit, PgRateLimitStore, RateLimitLayer, TierLimits};
use common::{CountingStore, Reply, clerk, error_code, get_with_token, send};
use http::{Request, StatusCode, header};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinSet;
use tower::ServiceBuilder;

fn limits(free: Limit) -> TierLimits {
    TierLimits::new(Some(free))
        .tier("pro", Limit::per_minute(600))
        .tier("staff", None)
}

/// `/me` behind sync (outermost) then the limiter; `/anon` behind the optional sync layer.
fn limited_app(clerk: &ClerkSync, limiter: RateLimitLayer) -> Router {
    let me = Router::new()
        .route(
            "/me",
            get(|user: ClerkUser| async move { user.tier().to_owned() }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(clerk.layer())
                .layer(limiter.clone()),
        );
    let anon = Router::new()
        .route("/anon", get(|| async { "anonymous ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(clerk.optional_layer())
                .layer(limiter),
        );
    me.merge(anon)
}

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply.headers[name].to_str().unwrap().parse().unwrap()
}

async fn sync_and_clerk(pool: &PgPool) -> (DevIssuer, ClerkSync, CountingStore) {
    clerk_sync::migrate(pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let store = CountingStore::new(pool.clone());
    let clerk = clerk(&issuer, store.clone(), |b| b);
    (issuer, clerk, store)
}

/// N requests pass with counting-down headers, the next gets 429 with `Retry-After`, and the
/// budget comes back after the period.
async fn exactly_n_then_429_then_refill(router: &Router, token: &str) {
    let n = 3;
    for remaining in (0..n).rev() {
        let reply = get_with_token(router, "/me", Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(header_u64(&reply, "ratelimit-limit"), n);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), remaining);
        assert!(header_u64(&reply, "ratelimit-reset") <= 2);
    }
    let refused = get_with_token(router, "/me", Some(token)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&refused), "rate_limited");
    assert_eq!(header_u64(&refused, "ratelimit-remaining"), 0);
    // 3 per 2 s: one request's worth returns within 2/3 s, so `Retry-After` rounds up to 1.
    assert_eq!(header_u64(&refused, "retry-after"), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..n {
        assert_eq!(
            get_with_token(router, "/me", Some(token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_with_token(router, "/me", Some(token)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[sqlx::test(migrations = false)]
async fn memory_store_admits_exactly_the_limit(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let limit = Limit::new(3, Duration::from_secs(2)).unwrap();
    let router = limited_app(&clerk, RateLimitLayer::per_tier(limits(limit)));
    exactly_n_then_429_then_refill(&router, &issuer.token("user_mem")).await;
}

#[sqlx::test(migrations = false)]
async fn postgres_store_admits_exactly_the_limit(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let limit = Limit::new(3, Duration::from_secs(2)).unwrap();
    let limiter = RateLimitLayer::with_store(limits(limit), PgRateLimitStore::new(pool.clone()));
    let router = limited_app(&clerk, limiter);
    exactly_n_then_429_then_refill(&router, &issuer.token("user_pg")).await;
}

#[sqlx::test(migrations = false)]
async fn a_new_users_first_request_is_counted_after_its_row_exists(pool: PgPool) {
    let (issuer, clerk, store) = sync_and_clerk(&pool).await;
    let limiter = RateLimitLayer::with_store(
        limits(Limit::per_minute(5).unwrap()),
        PgRateLimitStore::new(pool.clone()),
    );
    let router = limited_app(&clerk, limiter);
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_brand_new"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 4);
    assert_eq!(store.calls(), 1);
    // The limiter's row references the user's row: it could only be written after sync.
    let (user_exists, limited): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = 'user_brand_new'), \
                EXISTS (SELECT 1 FROM clerk_rate_limits WHERE user_id = 'user_brand_new')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(user_exists && limited);
    // And the database refuses limiter state for a user that was never synced.
    let orphan = sqlx::query(
        "INSERT INTO clerk_rate_limits (user_id, tat, allowed) VALUES ('user_ghost', now(), true)",
    )
    .execute(&pool)
    .await;
    assert!(orphan.is_err(), "the foreign key holds");
}

#[sqlx::test(migrations = false)]
async fn two_processes_share_one_limit_without_over_admission(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    let (issuer, _, _) = sync_and_clerk(&pool).await;
    let mut routers = Vec::new();
    for _ in 0..2 {
        let own_pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .unwrap();
        let clerk = clerk(&issuer, CountingStore::new(own_pool.clone()), |b| b);
        let limiter = RateLimitLayer::with_store(
            limits(Limit::per_hour(20).unwrap()),
            PgRateLimitStore::new(own_pool),
        );
        routers.push(limited_app(&clerk, limiter));
    }
    let token = issuer.token("user_busy");
    let mut requests = JoinSet::new();
    for i in 0..60 {
        let router = routers[i % 2].clone();
        let token = token.clone();
        requests.spawn(async move { get_with_token(&router, "/me", Some(&token)).await.status });
    }
    let mut passed = 0;
    while let Some(status) = requests.join_next().await {
        match status.unwrap() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(passed, 20, "one combined limit across both processes");
}

#[sqlx::test(migrations = false)]
async fn tier_upgrade_applies_on_the_next_request_after_invalidate(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    let router = limited_app(
        &clerk,
        RateLimitLayer::per_tier(limits(Limit::per_minute(60).unwrap())),
    );
    let token = issuer.token("user_upgrading");
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 60);

    sqlx::query("UPDATE users SET tier = 'pro' WHERE id = 'user_upgrading'")
        .execute(&pool)
        .await
        .unwrap();
    clerk.invalidate("user_upgrading").await.unwrap();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 600);

    sqlx::query("UPDATE users SET tier = 'staff' WHERE id = 'user_upgrading'")
        .execute(&pool)
        .await
        .unwrap();
    clerk.invalidate("user_upgrading").await.unwrap();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !reply.headers.contains_key("ratelimit-limit"),
        "unlimited tiers get no headers"
    );
}

#[sqlx::test(migrations = false)]
async fn wrong_layer_order_is_a_500_that_says_how_to_fix_it(pool: PgPool) {
    let (issuer, clerk, store) = sync_and_clerk(&pool).await;
    // Router::layer: the last call is outermost, so here the limiter runs first.
    let router = Router::new()
        .route("/me", get(|| async { "unreachable" }))
        .layer(clerk.layer())
        .layer(RateLimitLayer::per_tier(limits(
            Limit::per_minute(60).unwrap(),
        )));
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_x"))).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&reply), "rate_limit_misconfigured");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("clerk.layer()") && message.contains("before"),
        "{message}"
    );
    assert_eq!(store.calls(), 0);
}

#[sqlx::test(migrations = false)]
async fn anonymous_requests_pass_or_are_limited_by_ip(pool: PgPool) {
    let (_, clerk, _) = sync_and_clerk(&pool).await;
    let free = limits(Limit::per_minute(60).unwrap());
    let open = limited_app(&clerk, RateLimitLayer::per_tier(free.clone()));
    for _ in 0..3 {
        let reply = get_with_token(&open, "/anon", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("ratelimit-limit"));
    }

    let by_ip = RateLimitLayer::per_tier(free)
        .anonymous(AnonymousPolicy::ByIp(Limit::per_minute(2).unwrap()));
    let router = limited_app(&clerk, by_ip);
    let from = |ip: [u8; 4]| {
        let mut request = Request::get("/anon").body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        request
    };
    assert_eq!(
        send(&router, from([10, 0, 0, 1])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&router, from([10, 0, 0, 1])).await.status,
        StatusCode::OK
    );
    let refused = send(&router, from([10, 0, 0, 1])).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&refused), "rate_limited");
    assert_eq!(
        send(&router, from([10, 0, 0, 2])).await.status,
        StatusCode::OK
    );

    // Without ConnectInfo the IP policy cannot work, and says so.
    let reply = get_with_token(&router, "/anon", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("connect_info")
    );
}

#[sqlx::test(migrations = false)]
async fn store_failures_pass_by_default_or_answer_503(pool: PgPool) {
    let (issuer, clerk, _) = sync_and_clerk(&pool).await;
    sqlx::query("DROP TABLE clerk_rate_limits")
        .execute(&pool)
        .await
        .unwrap();
    let free = limits(Limit::per_minute(60).unwrap());
    let token = issuer.token("user_outage");

    let lenient = RateLimitLayer::with_store(free.clone(), PgRateLimitStore::new(pool.clone()));
    let reply = get_with_token(&limited_app(&clerk, lenient), "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.headers.contains_key("ratelimit-limit"));

    let strict = RateLimitLayer::with_store(free, PgRateLimitStore::new(pool.clone()))
        .on_store_failure(StoreFailurePolicy::Deny);
    let reply = get_with_token(&limited_app(&clerk, strict), "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "rate_limit_unavailable");
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
}
