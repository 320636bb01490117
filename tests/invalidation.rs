//! Cache invalidation across processes: two `ClerkSync`s on separate pools of one database.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use clerk_sync::testing::{DevIssuer, signed_webhook_request};
use clerk_sync::{ClerkSync, Stats};
use common::{
    CountingStore, WEBHOOK_PATH, WEBHOOK_SECRET, app, clerk, error_code, get_with_token, send,
};
use http::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// One "process": its own pool, store, `ClerkSync` and app.
struct Process {
    clerk: ClerkSync,
    store: CountingStore,
    router: Router,
}

async fn process(issuer: &DevIssuer, options: &PgConnectOptions) -> Process {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .unwrap();
    let store = CountingStore::new(pool.clone());
    let clerk = clerk(issuer, store.clone(), |b| b);
    let router = app(&clerk, pool);
    Process {
        clerk,
        store,
        router,
    }
}

/// Polls `clerk.stats()` until `ready` holds; returns how long it took.
async fn wait_for(clerk: &ClerkSync, what: &str, ready: impl Fn(&Stats) -> bool) -> Duration {
    let started = Instant::now();
    while !ready(&clerk.stats()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: {:?}",
            clerk.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

fn deleted_event(id: &str) -> String {
    json!({"data": {"deleted": true, "id": id, "object": "user"}, "object": "event",
        "type": "user.deleted", "timestamp": 1716883300, "instance_id": "ins_1"})
    .to_string()
}

async fn setup(pool: &PgPool, options: &PgConnectOptions) -> (DevIssuer, Process, Process) {
    clerk_sync::migrate(pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let a = process(&issuer, options).await;
    let b = process(&issuer, options).await;
    for p in [&a, &b] {
        wait_for(&p.clerk, "the listener", |s| s.listener_connects >= 1).await;
    }
    (issuer, a, b)
}

#[sqlx::test(migrations = false)]
async fn webhook_in_one_process_evicts_the_user_in_the_other(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    let (issuer, a, b) = setup(&pool, &options).await;
    let token = issuer.token("user_shared");
    assert_eq!(
        get_with_token(&b.router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(b.store.calls(), 1);

    let delivered = Instant::now();
    let request = signed_webhook_request(
        WEBHOOK_PATH,
        WEBHOOK_SECRET,
        "msg_cross",
        &deleted_event("user_shared"),
    )
    .unwrap();
    assert_eq!(send(&a.router, request).await.status, StatusCode::OK);
    let after_response =
        wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 1).await;
    let latency = delivered.elapsed();
    println!(
        "cross-process eviction: {latency:?} after the delivery was sent ({after_response:?} after it was answered)"
    );
    assert!(
        latency < Duration::from_secs(1),
        "evicted after {latency:?}"
    );

    // Process B no longer trusts its cache: the same valid token is now refused.
    let reply = get_with_token(&b.router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "user_deleted");
}

#[sqlx::test(migrations = false)]
async fn invalidate_reaches_every_process(pool_options: PgPoolOptions, options: PgConnectOptions) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    let (issuer, a, b) = setup(&pool, &options).await;
    let token = issuer.token("user_upgraded");
    for p in [&a, &b] {
        let reply = get_with_token(&p.router, "/me", Some(&token)).await;
        assert_eq!(reply.body["tier"], "free");
    }
    sqlx::query("UPDATE users SET tier = 'pro' WHERE id = 'user_upgraded'")
        .execute(&pool)
        .await
        .unwrap();
    a.clerk.invalidate("user_upgraded").await.unwrap();
    wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 1).await;
    for p in [&a, &b] {
        let reply = get_with_token(&p.router, "/me", Some(&token)).await;
        assert_eq!(reply.body["tier"], "pro");
        assert_eq!(p.store.calls(), 2, "synced again after the eviction");
    }
}

#[sqlx::test(migrations = false)]
async fn killed_listener_reconnects_and_clears_the_cache(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    let (issuer, a, b) = setup(&pool, &options).await;
    let first = issuer.token("user_before_kill");
    let second = issuer.token("user_after_kill");
    for token in [&first, &second] {
        assert_eq!(
            get_with_token(&b.router, "/me", Some(token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(b.store.calls(), 2);

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true, true], "one listener per process");

    let took = wait_for(&b.clerk, "the reconnect", |s| s.listener_connects >= 2).await;
    println!("listener reconnected {took:?} after its backend was terminated");
    // The whole cache was cleared: the next request syncs again.
    assert_eq!(
        get_with_token(&b.router, "/me", Some(&first)).await.status,
        StatusCode::OK
    );
    assert_eq!(b.store.calls(), 3);

    // And the new connection receives notifications.
    wait_for(&a.clerk, "a's reconnect", |s| s.listener_connects >= 2).await;
    a.clerk.invalidate("user_after_kill").await.unwrap();
    wait_for(&b.clerk, "the eviction", |s| s.invalidations_received >= 1).await;
    assert_eq!(
        get_with_token(&b.router, "/me", Some(&second)).await.status,
        StatusCode::OK
    );
    assert_eq!(b.store.calls(), 4);
}

#[sqlx::test(migrations = false)]
async fn listener_stops_when_the_last_handle_is_dropped(
    pool_options: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = pool_options.connect_with(options.clone()).await.unwrap();
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let listening = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let p = process(&issuer, &options).await;
    wait_for(&p.clerk, "the listener", |s| s.listener_connects >= 1).await;
    assert_eq!(listening().await, 1);

    drop(p);
    let started = Instant::now();
    while listening().await != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the listener kept running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
