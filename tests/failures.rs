//! Database outages: a loopback proxy in front of PostgreSQL is cut mid-run. Requests for new
//! users get fast 503s (or pass, failing open), nothing is cached, and service recovers.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use clerk_sync::testing::DevIssuer;
use clerk_sync::{FailurePolicy, PgUserStore};
use common::{app, clerk, error_code, get_with_token, proxied_pool, user_rows};
use http::{StatusCode, header};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

#[sqlx::test(migrations = false)]
async fn outage_gives_fast_503s_then_recovers(_: PgPoolOptions, options: PgConnectOptions) {
    let (proxy, pool, direct) = proxied_pool(&options, ACQUIRE_TIMEOUT).await;
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(pool.clone()), |b| b);
    let router = app(&clerk, direct.clone());

    let known = issuer.token("user_known");
    assert_eq!(
        get_with_token(&router, "/me", Some(&known)).await.status,
        StatusCode::OK
    );

    proxy.cut();
    let token = issuer.token("user_during_outage");
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get_with_token(&router, "/me", Some(&token)).await;
        let elapsed = started.elapsed();
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(error_code(&reply), "sync_unavailable");
        assert_eq!(reply.headers[header::RETRY_AFTER], "1");
        assert!(
            elapsed < ACQUIRE_TIMEOUT + Duration::from_millis(500),
            "answered in {elapsed:?}, past the acquire timeout"
        );
    }
    // A user synced before the outage is served from the cache, without the database.
    assert_eq!(
        get_with_token(&router, "/me", Some(&known)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        user_rows(&direct).await,
        1,
        "nothing written during the outage"
    );
    assert_eq!(clerk.stats().upserts_failed, 3, "failures are not cached");

    proxy.restore();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["row_tier"], "free");
    assert_eq!(user_rows(&direct).await, 2);
}

#[sqlx::test(migrations = false)]
async fn fail_open_passes_unsynced_users_through(_: PgPoolOptions, options: PgConnectOptions) {
    let (proxy, pool, direct) = proxied_pool(&options, ACQUIRE_TIMEOUT).await;
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(pool.clone()), |b| {
        b.failure_policy(FailurePolicy::Open).default_tier("basic")
    });
    let router = app(&clerk, direct.clone());

    proxy.cut();
    let token = issuer.token("user_open");
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["synced"], false);
    assert_eq!(reply.body["tier"], "basic");
    assert_eq!(reply.body["row_tier"], serde_json::Value::Null);
    assert_eq!(clerk.stats().upserts_failed, 1);

    proxy.restore();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.body["synced"], true, "the failure was not cached");
    assert_eq!(reply.body["row_tier"], "free");
}

#[sqlx::test(migrations = false)]
async fn closed_port_is_503_within_the_acquire_timeout(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    // Bind and drop a listener to get a port that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = PgPoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/nowhere"))
        .unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(dead), |b| b);
    let router = app(&clerk, pool.clone());

    let started = Instant::now();
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_x"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "sync_unavailable");
    assert!(started.elapsed() < ACQUIRE_TIMEOUT + Duration::from_millis(500));
    assert_eq!(user_rows(&pool).await, 0);
}
