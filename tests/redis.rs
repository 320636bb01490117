//! The Redis rate-limit store and Redis invalidation, against the real Redis on
//! `127.0.0.1:6379` (`REDIS_URL`): every test has its own key prefix or channel, and faults
//! go through a loopback proxy (the shared server is never stopped).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use clerk_sync::ratelimit::StoreFailurePolicy;
use clerk_sync::testing::{DevIssuer, signed_webhook_request};
use clerk_sync::{
    ClerkSync, ClerkUser, Limit, MemoryUserStore, RateLimitLayer, RedisChannel,
    RedisRateLimitStore, TierLimits,
};
use common::{
    CountingStore, Reply, TcpProxy, WEBHOOK_PATH, WEBHOOK_SECRET, app, clerk, error_code,
    get_with_token, send, wait_for,
};
use http::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinSet;
use tower::ServiceBuilder;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A name no other test (or run) uses: keys and channels of one test stay its own.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("clerk_sync_test:{test}:{}:{nanos}", std::process::id())
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A proxy in front of the shared Redis, and its URL.
async fn redis_proxy() -> (TcpProxy, String) {
    let upstream: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let url = format!("redis://{}", proxy.addr);
    (proxy, url)
}

fn store(url: &str, test: &str) -> RedisRateLimitStore {
    RedisRateLimitStore::new(url)
        .unwrap()
        .key_prefix(format!("{}:", unique(test)))
}

fn limited(clerk: &ClerkSync, limiter: RateLimitLayer) -> Router {
    Router::new()
        .route(
            "/me",
            get(|user: ClerkUser| async move { user.tier().to_owned() }),
        )
        .layer(ServiceBuilder::new().layer(clerk.layer()).layer(limiter))
}

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply.headers[name].to_str().unwrap().parse().unwrap()
}

/// Users in memory (these tests are about the limiter's store, Redis), synced by the layer.
fn memory_clerk(issuer: &DevIssuer) -> (ClerkSync, MemoryUserStore) {
    let users = MemoryUserStore::new();
    (clerk(issuer, users.clone(), |b| b), users)
}

#[tokio::test]
async fn two_limiters_on_two_connections_share_one_limit_under_concurrency() {
    let issuer = DevIssuer::start().await.unwrap();
    let prefix = format!("{}:", unique("shared"));
    let mut routers = Vec::new();
    let mut layers = Vec::new();
    for _ in 0..2 {
        let (clerk, _) = memory_clerk(&issuer);
        let store = RedisRateLimitStore::new(&redis_url())
            .unwrap()
            .key_prefix(&prefix);
        let limiter =
            RateLimitLayer::with_store(TierLimits::new(Limit::per_hour(20).unwrap()), store);
        routers.push(limited(&clerk, limiter.clone()));
        layers.push(limiter);
    }
    let token = issuer.token("user_busy");
    let mut requests = JoinSet::new();
    for i in 0..60 {
        let router = routers[i % 2].clone();
        let token = token.clone();
        requests.spawn(async move { get_with_token(&router, "/me", Some(&token)).await });
    }
    let (mut passed, mut refused) = (0, 0);
    while let Some(reply) = requests.join_next().await {
        let reply = reply.unwrap();
        match reply.status {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(error_code(&reply), "rate_limited");
                assert!(header_u64(&reply, "retry-after") >= 1);
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!(
        (passed, refused),
        (20, 40),
        "one combined limit across both processes"
    );
    for limiter in layers {
        assert_eq!(limiter.stats().store_failures, 0);
    }
}

#[tokio::test]
async fn a_redis_cut_applies_the_failure_policy_then_recovers_without_a_restart() {
    let issuer = DevIssuer::start().await.unwrap();
    let (clerk, _) = memory_clerk(&issuer);
    let (proxy, url) = redis_proxy().await;
    let limits = || TierLimits::new(Limit::per_minute(10).unwrap());
    let prefix = format!("{}:", unique("cut"));
    let allow = RateLimitLayer::with_store(
        limits(),
        RedisRateLimitStore::new(&url).unwrap().key_prefix(&prefix),
    );
    let deny = RateLimitLayer::with_store(
        limits(),
        RedisRateLimitStore::new(&url).unwrap().key_prefix(&prefix),
    )
    .on_store_failure(StoreFailurePolicy::Deny);
    let (open, closed) = (
        limited(&clerk, allow.clone()),
        limited(&clerk, deny.clone()),
    );
    let token = issuer.token("user_cut");
    for (router, remaining) in [(&open, 9), (&closed, 8)] {
        let reply = get_with_token(router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), remaining);
    }

    proxy.cut();
    for _ in 0..5 {
        let started = Instant::now();
        let reply = get_with_token(&open, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "Allow lets it through");
        assert!(
            !reply.headers.contains_key("ratelimit-limit"),
            "unlimited: no headers"
        );
        let reply = get_with_token(&closed, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&reply), "rate_limit_unavailable");
        assert_eq!(header_u64(&reply, "retry-after"), 1);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "two failures took {took:?}");
    }
    assert_eq!(allow.stats().store_failures, 5);
    assert_eq!(deny.stats().store_failures, 5);

    proxy.restore();
    // A Redis that stops answering (connections open, nothing comes back) costs each request
    // the store's timeout (250 ms), not a TCP timeout.
    let reply = get_with_token(&open, "/me", Some(&token)).await;
    assert_eq!(
        header_u64(&reply, "ratelimit-remaining"),
        7,
        "{}",
        reply.body
    );
    proxy.stall();
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get_with_token(&closed, "/me", Some(&token)).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&reply), "rate_limit_unavailable");
        assert!(
            (Duration::from_millis(200)..Duration::from_millis(700)).contains(&took),
            "a stalled Redis answered in {took:?}"
        );
    }
    assert_eq!(deny.stats().store_failures, 8);

    proxy.restore();
    // The connection comes back by itself; the budget spent before the cut is still there.
    let started = Instant::now();
    let reply = loop {
        let reply = get_with_token(&closed, "/me", Some(&token)).await;
        if reply.status == StatusCode::OK {
            break reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no recovery: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // 3 spent before the stall, this one, and the 3 decisions that timed out: they reached
    // Redis when the partition healed and spent budget too (a timed-out command may run).
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 3);
    let reply = get_with_token(&open, "/me", Some(&token)).await;
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 2);
}

#[tokio::test]
async fn script_flush_is_reloaded_transparently() {
    let issuer = DevIssuer::start().await.unwrap();
    let (clerk, _) = memory_clerk(&issuer);
    let limiter = RateLimitLayer::with_store(
        TierLimits::new(Limit::per_minute(10).unwrap()),
        store(&redis_url(), "flush"),
    );
    let router = limited(&clerk, limiter.clone());
    let token = issuer.token("user_flush");
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 9);

    let mut redis = redis_connection().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .unwrap();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 8);
    assert_eq!(limiter.stats().store_failures, 0, "NOSCRIPT was handled");
}

#[tokio::test]
async fn a_denied_client_costs_no_redis_call_until_its_retry_time() {
    let issuer = DevIssuer::start().await.unwrap();
    let (clerk, _) = memory_clerk(&issuer);
    let (proxy, url) = redis_proxy().await;
    // 2 per 2 s: one request's worth comes back every second.
    let limiter = RateLimitLayer::with_store(
        TierLimits::new(Limit::new(2, Duration::from_secs(2)).unwrap()),
        store(&url, "denied"),
    );
    let router = limited(&clerk, limiter.clone());
    let token = issuer.token("user_hammer");
    for _ in 0..2 {
        assert_eq!(
            get_with_token(&router, "/me", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    let refused = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let denied_at = Instant::now();
    let sent = proxy.bytes_sent();
    assert!(sent > 0);

    let mut hammered = 0;
    while denied_at.elapsed() < Duration::from_millis(800) {
        let reply = get_with_token(&router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error_code(&reply), "rate_limited");
        assert_eq!(header_u64(&reply, "retry-after"), 1);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), 0);
        hammered += 1;
    }
    assert!(hammered >= 10, "{hammered}");
    assert_eq!(
        proxy.bytes_sent(),
        sent,
        "{hammered} refusals sent nothing to Redis"
    );

    // Another client is not affected, and asks Redis.
    let other = issuer.token("user_calm");
    assert_eq!(
        get_with_token(&router, "/me", Some(&other)).await.status,
        StatusCode::OK
    );
    let after_other = proxy.bytes_sent();
    assert!(after_other > sent);

    // At the retry time the client asks Redis again, and passes.
    tokio::time::sleep(Duration::from_millis(1050).saturating_sub(denied_at.elapsed())).await;
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(proxy.bytes_sent() > after_other);
    assert_eq!(limiter.stats().store_failures, 0);
}

#[tokio::test]
async fn a_tier_upgrade_and_invalidate_lift_a_remembered_refusal_at_once() {
    let issuer = DevIssuer::start().await.unwrap();
    let (clerk, users) = memory_clerk(&issuer);
    let limits =
        TierLimits::new(Limit::per_minute(1).unwrap()).tier("pro", Limit::per_minute(600).unwrap());
    let router = limited(
        &clerk,
        RateLimitLayer::with_store(limits, store(&redis_url(), "upgrade")),
    );
    let token = issuer.token("user_upgrading");
    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    let refused = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&refused, "retry-after"), 60);

    assert!(users.set_tier("user_upgrading", "pro"));
    clerk.invalidate("user_upgrading").await.unwrap();
    // The next request is decided by Redis under the new limit, not by the refusal
    // remembered for the old one. GCRA keeps one arrival time per key: the minute spent at
    // 1/min is 0.1 s over what 600/min tolerates, so the wait is one interval of the new
    // tier (Retry-After rounds it up to 1 s), not the old tier's 60 s.
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 600);
    assert_eq!(header_u64(&reply, "retry-after"), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 600);
    assert_eq!(header_u64(&reply, "ratelimit-remaining"), 0);
}

/// One process of the invalidation tests: its own pool on the shared database (the users
/// table), invalidation through Redis on `channel` (through `url`).
struct Process {
    clerk: ClerkSync,
    store: CountingStore,
    router: Router,
}

async fn process(
    issuer: &DevIssuer,
    options: &PgConnectOptions,
    url: &str,
    channel: &str,
) -> Process {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .unwrap();
    let store = CountingStore::new(pool.clone());
    let redis = RedisChannel::new(url).unwrap().channel_name(channel);
    let clerk = clerk(issuer, store.clone(), |b| b.invalidation(redis));
    tokio::spawn(clerk.background());
    wait_for(&clerk, "the subscription", |s| s.listener_connects >= 1).await;
    let router = app(&clerk, pool);
    Process {
        clerk,
        store,
        router,
    }
}

async fn listeners_on_postgres(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_webhook_on_one_instance_evicts_on_the_other_through_redis(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let channel = unique("webhook");
    let a = process(&issuer, &options, &redis_url(), &channel).await;
    let b = process(&issuer, &options, &redis_url(), &channel).await;
    assert_eq!(
        listeners_on_postgres(&pool).await,
        0,
        "no LISTEN: the users table may sit behind a transaction pooler"
    );
    let token = issuer.token("user_shared");
    for p in [&a, &b] {
        let reply = get_with_token(&p.router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body["tier"], "free");
    }

    // `invalidate` on A reaches B.
    sqlx::query("UPDATE users SET tier = 'pro' WHERE id = 'user_shared'")
        .execute(&pool)
        .await
        .unwrap();
    a.clerk.invalidate("user_shared").await.unwrap();
    wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 1).await;
    let reply = get_with_token(&b.router, "/me", Some(&token)).await;
    assert_eq!(reply.body["tier"], "pro");
    assert_eq!(b.store.calls(), 2, "synced again after the eviction");

    // A webhook on A evicts on B.
    let body = json!({"data": {"deleted": true, "id": "user_shared", "object": "user"},
        "object": "event", "type": "user.deleted", "timestamp": 1716883300, "instance_id": "ins_1"})
    .to_string();
    let request = signed_webhook_request(WEBHOOK_PATH, WEBHOOK_SECRET, "msg_redis", &body).unwrap();
    let delivered = Instant::now();
    assert_eq!(send(&a.router, request).await.status, StatusCode::OK);
    wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 2).await;
    let latency = delivered.elapsed();
    assert!(
        latency < Duration::from_secs(1),
        "evicted after {latency:?}"
    );
    let reply = get_with_token(&b.router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "user_deleted");

    // A batch (a reconcile's repair) in one pipeline: one message per id.
    use clerk_sync::store::InvalidationChannel as _;
    let batch = RedisChannel::new(&redis_url())
        .unwrap()
        .channel_name(&channel);
    batch
        .publish_many(&["user_x".to_owned(), "user_y".to_owned()])
        .await
        .unwrap();
    wait_for(&b.clerk, "the batch", |s| s.invalidations_received >= 4).await;

    // Another channel name is another group of processes: it hears nothing.
    let c = process(&issuer, &options, &redis_url(), &unique("other")).await;
    a.clerk.invalidate("user_shared").await.unwrap();
    wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.clerk.stats().invalidations_received, 0);
}

#[sqlx::test(migrations = false)]
async fn a_killed_subscriber_resubscribes_and_clears_the_whole_cache(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let channel = unique("kill");
    let a = process(&issuer, &options, &redis_url(), &channel).await;
    // B reaches Redis through a proxy, so its subscriber's address is known.
    let (proxy, url) = redis_proxy().await;
    let b = process(&issuer, &options, &url, &channel).await;
    let (first, second) = (issuer.token("user_one"), issuer.token("user_two"));
    for token in [&first, &second] {
        assert_eq!(
            get_with_token(&b.router, "/me", Some(token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(b.store.calls(), 2);

    let upstream = proxy.upstream_addrs();
    assert_eq!(upstream.len(), 1, "B's only connection is its subscriber");
    let subscriber = upstream[0];
    let mut redis = redis_connection().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ADDR")
        .arg(subscriber.to_string())
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the subscriber at {subscriber}");

    let took = wait_for(&b.clerk, "the resubscription", |s| s.listener_connects >= 2).await;
    println!("subscriber back {took:?} after CLIENT KILL");
    // The whole cache was cleared: both users sync again.
    for token in [&first, &second] {
        assert_eq!(
            get_with_token(&b.router, "/me", Some(token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(b.store.calls(), 4);

    // And the new subscription hears A.
    a.clerk.invalidate("user_two").await.unwrap();
    wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 1).await;
    assert_eq!(
        get_with_token(&b.router, "/me", Some(&second)).await.status,
        StatusCode::OK
    );
    assert_eq!(b.store.calls(), 5);
}
