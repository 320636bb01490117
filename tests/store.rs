//! The `UserStore` behaviour suite, written once and run against PostgreSQL and SQLite:
//! idempotent, versioned, no NULL overwrites, tier on insert only, deleted users never
//! resurrected, one row per user under concurrency, webhook deliveries applied once.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use clerk_sync::{
    PgUserStore, SqliteUserStore, UpsertOutcome, UserChange, UserProfile, UserStore, WebhookOutcome,
};
use sqlx::{PgPool, SqlitePool};
use tempfile::TempDir;
use tokio::task::JoinSet;

/// One backend under test: the store, plus direct access for reading rows back.
enum Db {
    Postgres(PgPool),
    // The directory is held, not read: the database file lives as long as the test.
    Sqlite(SqlitePool, #[allow(dead_code)] TempDir),
}

/// A user row as both backends can report it.
#[derive(Debug, PartialEq)]
struct Row {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    tier: String,
    deleted: bool,
    version_ms: Option<i64>,
    seen: bool,
}

type RowTuple = (
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    bool,
    Option<i64>,
    bool,
);

impl Db {
    async fn postgres(pool: PgPool) -> Self {
        clerk_sync::migrate(&pool).await.unwrap();
        Self::Postgres(pool)
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let store = SqliteUserStore::open(path.to_str().unwrap()).await.unwrap();
        Self::Sqlite(store.pool().clone(), dir)
    }

    fn store(&self) -> Arc<dyn UserStore> {
        match self {
            Self::Postgres(pool) => Arc::new(PgUserStore::new(pool.clone())),
            Self::Sqlite(pool, _) => Arc::new(SqliteUserStore::new(pool.clone())),
        }
    }

    async fn row(&self, id: &str) -> Option<Row> {
        let row: Option<RowTuple> = match self {
            Self::Postgres(pool) => sqlx::query_as(
                "SELECT email, first_name, last_name, tier, deleted_at IS NOT NULL, \
                 (extract(epoch FROM clerk_updated_at) * 1000)::bigint, last_seen_at IS NOT NULL \
                 FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .unwrap(),
            Self::Sqlite(pool, _) => sqlx::query_as(
                "SELECT email, first_name, last_name, tier, deleted_at IS NOT NULL, \
                 clerk_updated_at, last_seen_at IS NOT NULL FROM users WHERE id = ?1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .unwrap(),
        };
        row.map(|r| Row {
            email: r.0,
            first_name: r.1,
            last_name: r.2,
            tier: r.3,
            deleted: r.4,
            version_ms: r.5,
            seen: r.6,
        })
    }

    /// Runs SQL that both dialects understand.
    async fn execute(&self, sql: &'static str) {
        match self {
            Self::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            Self::Sqlite(pool, _) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        }
        .unwrap();
    }

    async fn mark_deleted(&self, id: &str) {
        match self {
            Self::Postgres(pool) => {
                sqlx::query("UPDATE users SET deleted_at = now(), email = NULL WHERE id = $1")
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
            Self::Sqlite(pool, _) => {
                sqlx::query("UPDATE users SET deleted_at = 1, email = NULL WHERE id = ?1")
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|_| ())
            }
        }
        .unwrap();
    }

    async fn users(&self) -> i64 {
        let sql = "SELECT count(*) FROM users";
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Self::Sqlite(pool, _) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap()
    }
}

fn profile(id: &str, email: Option<&str>, version_ms: Option<i64>) -> UserProfile {
    let mut profile = UserProfile::new(id);
    profile.email = email.map(str::to_owned);
    profile.version_ms = version_ms;
    profile
}

fn active(tier: &str, inserted: bool) -> UpsertOutcome {
    UpsertOutcome::Active {
        tier: tier.into(),
        inserted,
    }
}

async fn insert_then_update_is_idempotent(db: &Db) {
    let store = db.store();
    let snapshot = profile("user_1", Some("a@example.com"), Some(1_000));
    assert_eq!(store.upsert(&snapshot).await.unwrap(), active("free", true));
    assert_eq!(
        store.upsert(&snapshot).await.unwrap(),
        active("free", false)
    );
    assert_eq!(db.users().await, 1);
    let row = db.row("user_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("a@example.com"));
    assert_eq!(row.version_ms, Some(1_000));
    assert!(row.seen, "the layer's upsert is a visit");
}

async fn older_snapshot_never_overwrites_a_newer_one(db: &Db) {
    let store = db.store();
    let mut newer = profile("user_1", Some("new@example.com"), Some(2_000));
    newer.first_name = Some("New".into());
    store.upsert(&newer).await.unwrap();
    let before = db.row("user_1").await.unwrap();

    let mut older = profile("user_1", Some("old@example.com"), Some(1_000));
    older.first_name = Some("Old".into());
    store.upsert(&older).await.unwrap();
    assert_eq!(db.row("user_1").await.unwrap(), before);

    store
        .upsert(&profile("user_1", Some("newest@example.com"), Some(3_000)))
        .await
        .unwrap();
    let row = db.row("user_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("newest@example.com"));
    assert_eq!(
        row.first_name.as_deref(),
        Some("New"),
        "absent fields are kept"
    );
    assert_eq!(row.version_ms, Some(3_000));
}

async fn null_never_erases_a_known_field(db: &Db) {
    let store = db.store();
    let mut full = profile("user_1", Some("a@example.com"), Some(1_000));
    full.first_name = Some("Ada".into());
    store.upsert(&full).await.unwrap();
    let mut partial = profile("user_1", None, Some(2_000));
    partial.last_name = Some("Lovelace".into());
    store.upsert(&partial).await.unwrap();

    let row = db.row("user_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("a@example.com"));
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
    assert_eq!(row.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(row.version_ms, Some(2_000));
}

async fn unversioned_snapshot_does_not_overwrite_a_versioned_row(db: &Db) {
    let store = db.store();
    store.upsert(&UserProfile::new("user_1")).await.unwrap();
    store
        .upsert(&profile("user_1", Some("first@example.com"), None))
        .await
        .unwrap();
    assert_eq!(
        db.row("user_1").await.unwrap().email.as_deref(),
        Some("first@example.com"),
        "an unversioned snapshot fills a row that never had a versioned one"
    );
    store
        .upsert(&profile(
            "user_1",
            Some("versioned@example.com"),
            Some(5_000),
        ))
        .await
        .unwrap();
    store
        .upsert(&profile("user_1", Some("stale@example.com"), None))
        .await
        .unwrap();
    let row = db.row("user_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("versioned@example.com"));
    assert_eq!(row.version_ms, Some(5_000));
}

async fn tier_is_set_on_insert_only(db: &Db) {
    let store = db.store();
    store.upsert(&UserProfile::new("user_1")).await.unwrap();
    db.execute("UPDATE users SET tier = 'pro'").await;
    let outcome = store
        .upsert(&profile("user_1", Some("a@example.com"), Some(9_000)))
        .await
        .unwrap();
    assert_eq!(outcome, active("pro", false));
    assert_eq!(db.row("user_1").await.unwrap().tier, "pro");
}

async fn deleted_user_is_not_resurrected_or_changed(db: &Db) {
    let store = db.store();
    store
        .upsert(&profile("user_1", Some("a@example.com"), Some(1_000)))
        .await
        .unwrap();
    db.mark_deleted("user_1").await;
    let before = db.row("user_1").await.unwrap();
    let outcome = store
        .upsert(&profile("user_1", Some("back@example.com"), Some(9_000)))
        .await
        .unwrap();
    assert_eq!(outcome, UpsertOutcome::Deleted);
    assert_eq!(db.row("user_1").await.unwrap(), before);
}

async fn concurrent_upserts_leave_one_row_per_user(db: &Db) {
    let store = db.store();
    let mut writes = JoinSet::new();
    for i in 0..60 {
        let store = store.clone();
        writes.spawn(async move {
            let id = format!("user_{}", i % 6);
            store.upsert(&profile(&id, None, None)).await
        });
    }
    while let Some(outcome) = writes.join_next().await {
        let outcome = outcome.unwrap().unwrap();
        assert!(matches!(outcome, UpsertOutcome::Active { ref tier, .. } if tier == "free"));
    }
    assert_eq!(db.users().await, 6);
}

async fn webhook_delivery_is_applied_once(db: &Db) {
    let store = db.store();
    let first = UserChange::Upsert(profile("user_1", Some("a@example.com"), Some(1_000)));
    let second = UserChange::Upsert(profile("user_1", Some("b@example.com"), Some(2_000)));
    assert_eq!(
        store.apply_webhook("msg_1", &first).await.unwrap(),
        WebhookOutcome::Applied
    );
    assert_eq!(
        store.apply_webhook("msg_1", &second).await.unwrap(),
        WebhookOutcome::Duplicate
    );
    let row = db.row("user_1").await.unwrap();
    assert_eq!(row.email.as_deref(), Some("a@example.com"));
    assert!(!row.seen, "a webhook is not a visit");
}

async fn webhook_delete_leaves_a_tombstone_no_event_undoes(db: &Db) {
    let store = db.store();
    let delete = UserChange::Delete {
        user_id: "user_1".into(),
        version_ms: Some(5_000),
    };
    assert_eq!(
        store.apply_webhook("msg_del", &delete).await.unwrap(),
        WebhookOutcome::Applied
    );
    let late = UserChange::Upsert(profile("user_1", Some("a@example.com"), Some(9_000)));
    assert_eq!(
        store.apply_webhook("msg_late", &late).await.unwrap(),
        WebhookOutcome::UserDeleted
    );
    assert_eq!(
        store
            .upsert(&profile("user_1", Some("a@example.com"), Some(9_000)))
            .await
            .unwrap(),
        UpsertOutcome::Deleted
    );
    let row = db.row("user_1").await.unwrap();
    assert!(row.deleted);
    assert_eq!(row.email, None);
}

/// Instantiates every behaviour test once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[sqlx::test(migrations = false)]
                async fn $name(pool: PgPool) {
                    super::$name(&Db::postgres(pool).await).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&Db::sqlite().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    insert_then_update_is_idempotent,
    older_snapshot_never_overwrites_a_newer_one,
    null_never_erases_a_known_field,
    unversioned_snapshot_does_not_overwrite_a_versioned_row,
    tier_is_set_on_insert_only,
    deleted_user_is_not_resurrected_or_changed,
    concurrent_upserts_leave_one_row_per_user,
    webhook_delivery_is_applied_once,
    webhook_delete_leaves_a_tombstone_no_event_undoes,
);

mod postgres_only {
    use super::*;

    #[sqlx::test(migrations = false)]
    async fn custom_table_names_are_validated_and_used(pool: PgPool) {
        clerk_sync::migrate(&pool).await.unwrap();
        sqlx::query("CREATE SCHEMA app")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE app.members (LIKE public.users INCLUDING ALL)")
            .execute(&pool)
            .await
            .unwrap();
        let store = PgUserStore::new(pool.clone())
            .with_table("app.members")
            .unwrap();
        assert_eq!(
            store.upsert(&UserProfile::new("user_1")).await.unwrap(),
            active("free", true)
        );
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM app.members), (SELECT count(*) FROM users)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(counts, (1, 0));
        for bad in [
            "users; DROP TABLE users",
            "a.b.c",
            "",
            "1users",
            "us\"ers",
            "app.",
        ] {
            let error = PgUserStore::new(pool.clone()).with_table(bad).unwrap_err();
            assert_eq!(error.setting(), "table", "{bad}");
        }
    }

    #[sqlx::test(migrations = false)]
    async fn migrations_are_rerunnable_and_kept_apart_from_the_apps(pool: PgPool) {
        clerk_sync::migrate(&pool).await.unwrap();
        clerk_sync::migrate(&pool).await.unwrap();
        let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM _clerk_sync_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        let files = std::fs::read_dir("migrations/postgres").unwrap().count() as i64;
        assert_eq!(ours, files, "each migration recorded once");
        let app_table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            app_table, None,
            "the app's own migration table is untouched"
        );
    }
}

mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn open_creates_a_wal_database_and_migrates_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.db");
        let store = SqliteUserStore::open(path.to_str().unwrap()).await.unwrap();
        assert!(path.exists());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        clerk_sync::migrate_sqlite(store.pool()).await.unwrap();
        let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM _clerk_sync_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let files = std::fs::read_dir("migrations/sqlite").unwrap().count() as i64;
        assert_eq!(ours, files);
        // Reopening an existing file keeps its rows.
        store.upsert(&UserProfile::new("user_kept")).await.unwrap();
        drop(store);
        let reopened = SqliteUserStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(reopened.pool())
            .await
            .unwrap();
        assert_eq!(count, 1);
    }
}
