//! Cache invalidation across processes: two `ClerkSync`s on separate pools of one database.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use clerk_sync::ClerkSync;
use clerk_sync::store::{
    ChannelEvent, InvalidationChannel, StoreError, StoreFuture, UpsertOutcome, UserChange,
    UserProfile, UserStore, WebhookOutcome,
};
use clerk_sync::testing::{DevIssuer, signed_webhook_request};
use common::{
    CountingStore, ScriptedChannel, WEBHOOK_PATH, WEBHOOK_SECRET, app, clerk, error_code,
    get_with_token, send, wait_for,
};
use http::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Notify;

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
    tokio::spawn(clerk.background());
    let router = app(&clerk, pool);
    Process {
        clerk,
        store,
        router,
    }
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

/// The real Postgres store, whose layer upserts can be parked after the write (before the
/// result is returned) while a test evicts.
#[derive(Clone)]
struct ParkingStore {
    inner: clerk_sync::PgUserStore,
    calls: Arc<AtomicU64>,
    park_next: Arc<AtomicBool>,
    parked: Arc<Notify>,
    release: Arc<Notify>,
}

impl ParkingStore {
    fn new(pool: PgPool) -> Self {
        Self {
            inner: clerk_sync::PgUserStore::new(pool),
            calls: Arc::default(),
            park_next: Arc::default(),
            parked: Arc::default(),
            release: Arc::default(),
        }
    }
}

impl UserStore for ParkingStore {
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let outcome = self.inner.upsert(profile).await;
            if self.park_next.swap(false, Ordering::SeqCst) {
                self.parked.notify_one();
                self.release.notified().await;
            }
            outcome
        })
    }

    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a UserChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        self.inner.apply_webhook(delivery_id, change)
    }

    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>> {
        self.inner.invalidation_channel()
    }
}

/// An app on a [`ParkingStore`], and a first request of `user_id` parked after its upsert
/// wrote the row (tier `free`); `evict` runs while it is parked, then the request finishes.
async fn race_eviction_with_first_sync<F, Fut>(
    pool: &PgPool,
    user_id: &str,
    evict: F,
) -> (DevIssuer, ParkingStore, Router, String)
where
    F: FnOnce(ClerkSync, Router, ScriptedChannel) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    clerk_sync::migrate(pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let store = ParkingStore::new(pool.clone());
    // A channel the test plays, so that it can stage a listener reconnect.
    let channel = ScriptedChannel::default();
    let clerk = clerk(&issuer, store.clone(), |b| b.invalidation(channel.clone()));
    tokio::spawn(clerk.background());
    channel.send(ChannelEvent::Listening);
    wait_for(&clerk, "the listener", |s| s.listener_connects >= 1).await;
    let router = app(&clerk, pool.clone());
    let token = issuer.token(user_id);

    store.park_next.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let router = router.clone();
        let token = token.clone();
        async move { get_with_token(&router, "/me", Some(&token)).await }
    });
    tokio::time::timeout(Duration::from_secs(10), store.parked.notified())
        .await
        .expect("the first upsert parks");
    evict(clerk, router.clone(), channel).await;
    store.release.notify_one();
    let reply = first.await.unwrap();
    // The overtaken result may answer its own request.
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["tier"], "free");
    (issuer, store, router, token)
}

#[sqlx::test(migrations = false)]
async fn invalidation_during_an_inflight_sync_keeps_its_result_out_of_the_cache(pool: PgPool) {
    let (_issuer, store, router, token) =
        race_eviction_with_first_sync(&pool, "user_race", |clerk, _, _| {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE users SET tier = 'pro' WHERE id = 'user_race'")
                    .execute(&pool)
                    .await
                    .unwrap();
                clerk.invalidate("user_race").await.unwrap();
            }
        })
        .await;
    // Not cached: the next request syncs again and reads the new tier.
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.body["tier"], "pro", "{}", reply.body);
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
    // And that result is cached as usual.
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.body["tier"], "pro");
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
}

#[sqlx::test(migrations = false)]
async fn delete_webhook_during_an_inflight_sync_is_not_undone_by_it(pool: PgPool) {
    let (_issuer, store, router, token) =
        race_eviction_with_first_sync(&pool, "user_race_del", |_, router, _| async move {
            let request = signed_webhook_request(
                WEBHOOK_PATH,
                WEBHOOK_SECRET,
                "msg_race_delete",
                &deleted_event("user_race_del"),
            )
            .unwrap();
            assert_eq!(send(&router, request).await.status, StatusCode::OK);
        })
        .await;
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(error_code(&reply), "user_deleted");
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
}

#[sqlx::test(migrations = false)]
async fn listener_clear_during_an_inflight_sync_keeps_its_result_out_of_the_cache(pool: PgPool) {
    let (_issuer, store, router, token) =
        race_eviction_with_first_sync(&pool, "user_race_clear", |clerk, _, channel| {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE users SET tier = 'team' WHERE id = 'user_race_clear'")
                    .execute(&pool)
                    .await
                    .unwrap();
                // The listener lost its channel and is back: the cache is cleared.
                channel.send(ChannelEvent::Lost(StoreError::Other("cut".into())));
                channel.send(ChannelEvent::Listening);
                wait_for(&clerk, "the reconnect", |s| s.listener_connects >= 2).await;
            }
        })
        .await;
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.body["tier"], "team", "{}", reply.body);
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
}

#[sqlx::test(migrations = false)]
async fn a_large_batch_is_published_whole_in_statements_under_the_send_buffer(pool: PgPool) {
    use futures_util::StreamExt as _;
    // 1,500 ids of 32 bytes (54 KiB): more than one statement under the 12 KiB limit.
    let ids: Vec<String> = (0..1_500).map(|n| format!("user_{n:027}")).collect();
    let channel = clerk_sync::PgChannel::new(pool);
    let mut events = channel.listen();
    assert!(matches!(events.next().await, Some(ChannelEvent::Listening)));
    channel.publish_many(&ids).await.unwrap();
    let mut received = Vec::new();
    while received.len() < ids.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("every id arrives");
        match event {
            Some(ChannelEvent::Message(id)) => received.push(id),
            other => panic!("unexpected event: {other:?}"),
        }
    }
    // Each id once, in order; nothing after.
    assert_eq!(received, ids);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.next())
            .await
            .is_err()
    );
}
