//! The backfill against real PostgreSQL (and SQLite) and `FakeClerkApi`: pagination edges,
//! retries and failed pages, idempotent re-runs, versioning and deleted users.
#![allow(clippy::unwrap_used)]

use clerk_sync::store::{UserChange, UserProfile, UserStore};
use clerk_sync::testing::{FakeClerkApi, Fault};
use clerk_sync::{BackfillOptions, BackfillReport, PgUserStore, SqliteUserStore, backfill};
use sqlx::PgPool;

async fn run(fake: &FakeClerkApi, store: &dyn UserStore, page_size: u32) -> BackfillReport {
    let mut calls = 0;
    let report = backfill(
        &fake.client(),
        store,
        BackfillOptions::default().page_size(page_size),
        |_| calls += 1,
    )
    .await;
    assert!(
        calls >= report.pages,
        "progress is reported after every page"
    );
    report
}

async fn store(pool: &PgPool) -> PgUserStore {
    clerk_sync::migrate(pool).await.unwrap();
    PgUserStore::new(pool.clone())
}

async fn ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM users ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn expected_ids(indices: impl Iterator<Item = u64>) -> Vec<String> {
    let mut ids: Vec<String> = indices.map(FakeClerkApi::user_id).collect();
    ids.sort();
    ids
}

#[sqlx::test(migrations = false)]
async fn no_users_is_one_request_and_nothing_written(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(0).await.unwrap();
    let report = run(&fake, &store, 500).await;
    assert_eq!(report.fetched, 0);
    assert_eq!(report.pages, 0);
    assert!(report.is_success());
    assert_eq!(fake.list_requests(), 1);
    assert!(ids(&pool).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn exactly_one_full_page_needs_one_more_empty_request(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(50).await.unwrap();
    let report = run(&fake, &store, 50).await;
    assert_eq!((report.fetched, report.inserted, report.pages), (50, 50, 1));
    assert_eq!(
        fake.list_requests(),
        2,
        "a full page, then an empty one ends the walk"
    );
    assert_eq!(ids(&pool).await, expected_ids(0..50));
}

#[sqlx::test(migrations = false)]
async fn pages_and_a_remainder_write_every_user_once_with_its_profile(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(1234).await.unwrap();
    let report = run(&fake, &store, 100).await;

    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.fetched, 1234);
    assert_eq!(report.inserted, 1234);
    assert_eq!((report.updated, report.unchanged, report.failed), (0, 0, 0));
    assert_eq!(report.pages, 13);
    assert_eq!(fake.list_requests(), 13, "12 full pages and a short one");
    assert_eq!(ids(&pool).await, expected_ids(0..1234));

    let (email, username, version, last_seen): (
        Option<String>,
        Option<String>,
        i64,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT email, username, (extract(epoch FROM clerk_updated_at) * 1000)::bigint, \
                last_seen_at::text FROM users WHERE id = $1",
    )
    .bind(FakeClerkApi::user_id(999))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        email.as_deref(),
        Some("user999@example.com"),
        "primary email"
    );
    assert_eq!(username.as_deref(), Some("user999"));
    assert_eq!(
        version,
        fake.updated_at_ms(999),
        "versioned by Clerk's updated_at"
    );
    assert_eq!(last_seen, None, "an import is not a visit");
}

#[sqlx::test(migrations = false)]
async fn a_second_run_is_all_unchanged_and_a_newer_snapshot_updates(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(300).await.unwrap();
    assert_eq!(run(&fake, &store, 100).await.inserted, 300);
    let before: Vec<(String, String)> =
        sqlx::query_as("SELECT id, updated_at::text FROM users ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();

    let again = run(&fake, &store, 100).await;
    assert_eq!(again.unchanged, 300, "{again:?}");
    assert_eq!((again.inserted, again.updated, again.failed), (0, 0, 0));
    let after: Vec<(String, String)> =
        sqlx::query_as("SELECT id, updated_at::text FROM users ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(before, after, "an unchanged row is not even rewritten");

    fake.touch_all(60_000);
    let touched = run(&fake, &store, 100).await;
    assert_eq!(touched.updated, 300, "{touched:?}");
    assert_eq!(touched.unchanged, 0);
}

#[sqlx::test(migrations = false)]
async fn newer_rows_win_and_deleted_users_stay_deleted(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(20).await.unwrap();

    // User 5 already has an email snapshot newer than Clerk's list (claims that raced ahead).
    let mut newer = UserProfile::new(FakeClerkApi::user_id(5));
    newer.email = Some("newer@example.com".into());
    newer.version_ms = Some(fake.updated_at_ms(5) + 1_000);
    store.upsert(&newer).await.unwrap();
    // User 7 was deleted (a `user.deleted` webhook).
    store
        .apply_webhook(
            "msg_delete_7",
            &UserChange::Delete {
                user_id: FakeClerkApi::user_id(7),
                version_ms: Some(fake.updated_at_ms(7) + 1_000),
            },
        )
        .await
        .unwrap();

    let report = run(&fake, &store, 500).await;
    assert_eq!(report.fetched, 20);
    assert_eq!(report.inserted, 18);
    // The newer email stays; the names that snapshot did not carry are filled (a version per
    // field: the newer email says nothing about the names).
    assert_eq!(report.updated, 1, "{report:?}");
    assert_eq!(report.unchanged, 0);
    assert_eq!(report.skipped_deleted, 1);
    assert!(report.is_success());

    let (email, first_name): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT email, first_name FROM users WHERE id = $1")
            .bind(FakeClerkApi::user_id(5))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some("newer@example.com"));
    assert!(first_name.is_some(), "the names come from the backfill");
    let (deleted, email): (bool, Option<String>) =
        sqlx::query_as("SELECT deleted_at IS NOT NULL, email FROM users WHERE id = $1")
            .bind(FakeClerkApi::user_id(7))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(deleted, "not resurrected");
    assert_eq!(email, None, "personal fields stay cleared");
}

#[sqlx::test(migrations = false)]
async fn a_429_is_waited_out_and_the_run_completes(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(250).await.unwrap();
    fake.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let report = run(&fake, &store, 100).await;
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.inserted, 250);
    assert_eq!(fake.faults_served(), 1);
    assert_eq!(fake.list_requests(), 4);
}

#[sqlx::test(migrations = false)]
async fn a_page_failing_past_the_retry_budget_is_counted_and_the_rest_written(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(450).await.unwrap();
    // The third page (positions 200..300, newest first: users 249 down to 150) always fails.
    fake.fail_page_at(200, Fault::ServerError(503));
    let report = run(&fake, &store, 100).await;

    assert!(!report.is_success());
    assert!(!report.aborted, "one bad page does not stop the walk");
    assert_eq!(report.failed, 100);
    assert_eq!(report.failed_pages, 1);
    assert_eq!(report.fetched, 350);
    assert_eq!(report.inserted, 350);
    assert_eq!(
        fake.faults_served(),
        4,
        "1 attempt + 3 retries of the client"
    );
    let written = expected_ids((0..150).chain(250..450));
    assert_eq!(ids(&pool).await, written, "every other page was written");
}

#[sqlx::test(migrations = false)]
async fn clerk_down_stops_the_walk_after_three_failed_pages(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(5_000).await.unwrap();
    fake.fail_next(1_000, Fault::ServerError(500));
    let report = run(&fake, &store, 100).await;
    assert!(report.aborted);
    assert_eq!(report.failed_pages, 3);
    assert_eq!(report.fetched, 0);
    assert_eq!(
        fake.list_requests(),
        12,
        "3 pages × 4 attempts, then it gives up"
    );
    assert!(ids(&pool).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn store_failures_count_the_page_and_the_run_goes_on(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    // A table that passes the store's column check and is gone when the pages arrive.
    sqlx::query("CREATE TABLE doomed (LIKE users INCLUDING ALL)")
        .execute(&pool)
        .await
        .unwrap();
    let missing = PgUserStore::new(pool.clone())
        .with_table("doomed")
        .await
        .unwrap();
    sqlx::query("DROP TABLE doomed")
        .execute(&pool)
        .await
        .unwrap();
    let fake = FakeClerkApi::start(150).await.unwrap();
    let report = run(&fake, &missing, 100).await;
    assert_eq!(report.fetched, 150);
    assert_eq!(report.failed, 150);
    assert_eq!(report.failed_pages, 2);
    assert_eq!(fake.list_requests(), 2, "every page was still fetched");
    assert!(!report.is_success());
}

#[sqlx::test(migrations = false)]
async fn a_dry_run_fetches_everything_and_writes_nothing(pool: PgPool) {
    let store = store(&pool).await;
    let fake = FakeClerkApi::start(120).await.unwrap();
    let report = backfill(
        &fake.client(),
        &store,
        BackfillOptions::default().page_size(50).dry_run(true),
        |_| {},
    )
    .await;
    assert!(report.dry_run && report.is_success());
    assert_eq!(report.fetched, 120);
    assert_eq!(report.inserted, 0);
    assert!(ids(&pool).await.is_empty());
}

#[tokio::test]
async fn the_sqlite_store_imports_with_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteUserStore::open(dir.path().join("users.db").to_str().unwrap())
        .await
        .unwrap();
    let fake = FakeClerkApi::start(230).await.unwrap();
    store
        .apply_webhook(
            "msg_delete_3",
            &UserChange::Delete {
                user_id: FakeClerkApi::user_id(3),
                version_ms: None,
            },
        )
        .await
        .unwrap();

    let first = run(&fake, &store, 100).await;
    assert_eq!(
        (first.inserted, first.skipped_deleted),
        (229, 1),
        "{first:?}"
    );
    let second = run(&fake, &store, 100).await;
    assert_eq!(
        (second.unchanged, second.skipped_deleted),
        (229, 1),
        "{second:?}"
    );
    fake.touch_all(1_000);
    let third = run(&fake, &store, 100).await;
    assert_eq!(third.updated, 229, "{third:?}");

    let (count, deleted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM users",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((count, deleted), (230, 1));
}
