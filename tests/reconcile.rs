//! `reconcile`: seeded drift of every class against `FakeClerkApi`, on the real PostgreSQL
//! and on SQLite, then the repair, the guards and the dry run.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clerk_sync::clerk_api::RetryPolicy;
use clerk_sync::store::{UserChange, UserProfile, UserStore};
use clerk_sync::testing::{FakeClerkApi, Fault};
use clerk_sync::{
    ClerkApi, PgUserStore, ReconcileOptions, ReconcileReport, SqliteUserStore, reconcile,
};
use sqlx::PgPool;

const CLERK_USERS: u64 = 40;
/// Clerk's users 0..IMPORTED have rows here; the rest are missing.
const IMPORTED: u64 = 30;
const STALE: u64 = 5;
const DELETED_HERE: std::ops::Range<u64> = 25..28;
const GONE: usize = 4;

fn id(index: u64) -> String {
    FakeClerkApi::user_id(index)
}

fn gone(index: usize) -> String {
    format!("user_gone_{index:02}")
}

fn api(fake: &FakeClerkApi) -> ClerkApi {
    fake.client().with_retry(RetryPolicy::new(
        0,
        Duration::from_millis(10),
        Duration::from_millis(10),
    ))
}

/// A store under test: the same scenario runs on both.
enum Db {
    Postgres(PgUserStore, PgPool),
    Sqlite(SqliteUserStore, #[allow(dead_code)] tempfile::TempDir),
}

impl Db {
    fn store(&self) -> &dyn UserStore {
        match self {
            Self::Postgres(store, _) => store,
            Self::Sqlite(store, _) => store,
        }
    }

    async fn run(&self, api: &ClerkApi, options: ReconcileOptions) -> ReconcileReport {
        match self {
            Self::Postgres(store, _) => reconcile(api, store, options).await.unwrap(),
            Self::Sqlite(store, _) => reconcile(api, store, options).await.unwrap(),
        }
    }

    /// Every row, every column, as text: what "nothing was written" compares.
    async fn snapshot(&self) -> Vec<String> {
        let sql = "SELECT id || '|' || COALESCE(email, '-') || '|' || COALESCE(first_name, '-') \
                   || '|' || COALESCE(CAST(deleted_at AS TEXT), 'live') || '|' \
                   || CAST(updated_at AS TEXT) FROM users ORDER BY id";
        match self {
            Self::Postgres(_, pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
            Self::Sqlite(store, _) => sqlx::query_scalar(sql)
                .fetch_all(store.pool())
                .await
                .unwrap(),
        }
    }

    /// `(email, deleted)` of one row.
    async fn row(&self, id: &str) -> Option<(Option<String>, bool)> {
        let sql = "SELECT email, deleted_at IS NOT NULL FROM users WHERE id = $1";
        match self {
            Self::Postgres(_, pool) => sqlx::query_as(sql)
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap(),
            Self::Sqlite(store, _) => sqlx::query_as(sql)
                .bind(id)
                .fetch_optional(store.pool())
                .await
                .unwrap(),
        }
    }
}

async fn postgres(pool: PgPool) -> Db {
    clerk_sync::migrate(&pool).await.unwrap();
    Db::Postgres(PgUserStore::new(pool.clone()), pool)
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reconcile.db");
    let store = SqliteUserStore::open(path.to_str().unwrap()).await.unwrap();
    Db::Sqlite(store, dir)
}

/// Rows for Clerk's users 0..30 (the first 5 from an older snapshot with another email),
/// users 25..28 deleted here, 4 rows Clerk does not know, and one old tombstone.
async fn seed(db: &Db, fake: &FakeClerkApi) {
    let api = api(fake);
    let mut profiles = Vec::new();
    for index in 0..IMPORTED {
        let mut profile = api.get_user(&id(index)).await.unwrap();
        if index < STALE {
            profile.email = Some(format!("old{index}@example.com"));
            profile.version_ms = profile.version_ms.map(|v| v - 60_000);
        }
        profiles.push(profile);
    }
    for index in 0..GONE {
        let mut profile = UserProfile::new(gone(index));
        profile.email = Some(format!("gone{index}@example.com"));
        profile.version_ms = Some(1_700_000_000_000);
        profiles.push(profile);
    }
    db.store().import(&profiles).await.unwrap();
    for index in DELETED_HERE {
        let change = UserChange::Delete {
            user_id: id(index),
            version_ms: Some(1_800_000_000_000),
        };
        db.store()
            .apply_webhook(&format!("msg_del_{index}"), &change)
            .await
            .unwrap();
    }
    let tombstone = UserChange::Delete {
        user_id: "user_tombstone".into(),
        version_ms: Some(1_800_000_000_000),
    };
    db.store()
        .apply_webhook("msg_tomb", &tombstone)
        .await
        .unwrap();
}

async fn every_class_is_reported_then_repaired(db: Db) {
    let fake = FakeClerkApi::start(CLERK_USERS).await.unwrap();
    seed(&db, &fake).await;
    let api = api(&fake);
    let options = ReconcileOptions::default().page_size(7);

    // The dry run: the exact report, and nothing written.
    let before = db.snapshot().await;
    let report = db.run(&api, options).await;
    let in_sync = IMPORTED - STALE - (DELETED_HERE.end - DELETED_HERE.start);
    assert_eq!(
        (
            report.clerk_users,
            report.missing,
            report.deleted_in_clerk,
            report.stale,
            report.in_sync,
            report.deleted_here,
            report.table_rows,
        ),
        (
            CLERK_USERS,
            CLERK_USERS - IMPORTED,
            GONE as u64,
            STALE,
            in_sync,
            3,
            35
        ),
        "{report:#?}"
    );
    assert!(report.walk_complete && !report.applied && report.has_drift());
    assert_eq!(
        report.max_deletes, 100,
        "the larger of 100 and 1% of 35 rows"
    );
    let mut missing: Vec<String> = (IMPORTED..CLERK_USERS).map(id).collect();
    missing.sort();
    assert_eq!(report.examples.missing, missing);
    assert_eq!(
        report.examples.deleted_in_clerk,
        (0..GONE).map(gone).collect::<Vec<_>>()
    );
    let mut stale: Vec<String> = (0..STALE).map(id).collect();
    stale.sort();
    assert_eq!(report.examples.stale, stale);
    assert_eq!(
        report.examples.deleted_here,
        DELETED_HERE.map(id).collect::<Vec<_>>()
    );
    assert_eq!(db.snapshot().await, before, "a dry run writes nothing");
    assert_eq!(fake.user_requests(), IMPORTED, "no confirmation calls");

    // The repair.
    let report = db.run(&api, options.apply(true)).await;
    assert!(report.applied && report.is_success(), "{report:#?}");
    assert_eq!(
        (
            report.inserted,
            report.updated,
            report.deleted,
            report.still_in_clerk
        ),
        (CLERK_USERS - IMPORTED, STALE, GONE as u64, 0)
    );
    assert_eq!(
        fake.user_requests(),
        IMPORTED + GONE as u64,
        "one GET /v1/users/{{id}} per deletion"
    );
    for index in 0..GONE {
        assert_eq!(
            db.row(&gone(index)).await,
            Some((None, true)),
            "soft-deleted, email cleared"
        );
    }
    assert_eq!(
        db.row(&id(0)).await,
        Some((Some(FakeClerkApi::email(0)), false))
    );
    assert!(!db.row(&id(CLERK_USERS - 1)).await.unwrap().1);
    for index in DELETED_HERE {
        assert!(db.row(&id(index)).await.unwrap().1, "never revived");
    }
    assert!(db.row("user_tombstone").await.unwrap().1);

    // A second run finds nothing to do.
    let report = db.run(&api, options).await;
    assert!(!report.has_drift(), "{report:#?}");
    assert_eq!((report.in_sync, report.deleted_here), (CLERK_USERS - 3, 3));
}

#[sqlx::test(migrations = false)]
async fn postgres_drift_of_every_class_is_reported_then_repaired(pool: PgPool) {
    every_class_is_reported_then_repaired(postgres(pool).await).await;
}

#[tokio::test]
async fn sqlite_drift_of_every_class_is_reported_then_repaired() {
    every_class_is_reported_then_repaired(sqlite().await).await;
}

#[sqlx::test(migrations = false)]
async fn more_deletions_than_allowed_are_refused_and_nothing_is_written(pool: PgPool) {
    let db = postgres(pool).await;
    let fake = FakeClerkApi::start(10).await.unwrap();
    // 150 rows Clerk does not know (another instance's users, say) and 10 missing.
    let strangers: Vec<UserProfile> = (0..150)
        .map(|i| {
            let mut profile = UserProfile::new(format!("user_other_{i:03}"));
            profile.email = Some(format!("other{i}@example.com"));
            profile
        })
        .collect();
    db.store().import(&strangers).await.unwrap();
    let before = db.snapshot().await;
    let api = api(&fake);
    let report = db.run(&api, ReconcileOptions::default().apply(true)).await;
    assert!(report.deletions_refused && !report.applied && !report.is_success());
    assert_eq!((report.deleted_in_clerk, report.max_deletes), (150, 100));
    assert_eq!((report.inserted, report.deleted), (0, 0));
    assert_eq!(
        db.snapshot().await,
        before,
        "nothing written, not even the missing"
    );
    assert_eq!(fake.user_requests(), 0);

    // A higher limit lets it through; so does --force.
    let report = db
        .run(
            &api,
            ReconcileOptions::default().apply(true).max_deletes(149),
        )
        .await;
    assert!(report.deletions_refused);
    let report = db
        .run(&api, ReconcileOptions::default().apply(true).force(true))
        .await;
    assert!(report.applied && report.is_success(), "{report:#?}");
    assert_eq!((report.inserted, report.deleted), (10, 150));
}

#[sqlx::test(migrations = false)]
async fn a_walk_that_fails_midway_deletes_nothing(pool: PgPool) {
    let db = postgres(pool).await;
    let fake = FakeClerkApi::start(CLERK_USERS).await.unwrap();
    seed(&db, &fake).await;
    // The third page of 10 keeps failing (past the client's retries, none here).
    fake.fail_page_at(20, Fault::ServerError(502));
    let api = api(&fake);
    let report = db
        .run(&api, ReconcileOptions::default().page_size(10).apply(true))
        .await;
    assert!(!report.walk_complete && !report.is_success(), "{report:#?}");
    // Newest first: the walk saw users 39..20 before the failure.
    assert_eq!(report.clerk_users, 20);
    assert_eq!(report.deleted, 0);
    for index in 0..GONE {
        assert!(!db.row(&gone(index)).await.unwrap().1, "not deleted");
    }
    // What the walk did see was repaired (versioned, so safe): users 39..30 were missing.
    assert_eq!((report.inserted, report.updated), (10, 0));
    // Users after the failure were never seen: user 0 keeps its older row.
    assert_eq!(
        db.row(&id(0)).await,
        Some((Some("old0@example.com".into()), false))
    );
}

#[sqlx::test(migrations = false)]
async fn a_user_who_signs_up_during_the_walk_is_not_deleted(pool: PgPool) {
    let db = postgres(pool).await;
    let fake = FakeClerkApi::start(CLERK_USERS).await.unwrap();
    seed(&db, &fake).await;
    fake.set_latency(Duration::from_millis(60));
    let api = api(&fake);
    let walk = db.run(&api, ReconcileOptions::default().page_size(5).apply(true));
    let signup = async {
        // The walk takes 8 pages × 60 ms; sign up in the middle of it, as the layer would.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut profile = UserProfile::new("user_newcomer");
        profile.email = Some("new@example.com".into());
        db.store().upsert(&profile).await.unwrap();
    };
    let (report, ()) = tokio::join!(walk, signup);
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(
        report.deleted_in_clerk, GONE as u64,
        "the newcomer is no candidate"
    );
    assert_eq!(report.deleted, GONE as u64);
    assert_eq!(
        db.row("user_newcomer").await,
        Some((Some("new@example.com".into()), false))
    );
}

#[sqlx::test(migrations = false)]
async fn a_repair_evicts_what_it_changed_from_running_processes(pool: PgPool) {
    let db = postgres(pool.clone()).await;
    let fake = FakeClerkApi::start(CLERK_USERS).await.unwrap();
    seed(&db, &fake).await;
    // A running process that listens (LISTEN/NOTIFY on the same database).
    let issuer = clerk_sync::testing::DevIssuer::start().await.unwrap();
    let config = issuer.config().build().unwrap();
    let running = clerk_sync::ClerkSync::builder(config, PgUserStore::new(pool.clone()))
        .build()
        .unwrap();
    tokio::spawn(running.background());
    let started = std::time::Instant::now();
    while running.stats().listener_connects == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "not listening");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = db
        .run(&api(&fake), ReconcileOptions::default().apply(true))
        .await;
    assert_eq!((report.updated, report.deleted), (STALE, GONE as u64));
    // One message per updated or deleted user.
    let expected = STALE + GONE as u64;
    while running.stats().invalidations_received < expected {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            running.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(running.stats().invalidations_received, expected);
}
