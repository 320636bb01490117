//! The `UserStore` behaviour suite, written once and run against PostgreSQL, SQLite and the
//! memory store:
//! idempotent, versioned, no NULL overwrites, tier on insert only, deleted users never
//! resurrected, one row per user under concurrency, webhook deliveries applied once.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use clerk_sync::store::{UpsertOutcome, UserChange, UserProfile, UserStore, WebhookOutcome};
use clerk_sync::{MemoryUserStore, PgUserStore, SqliteUserStore};
use sqlx::{PgPool, SqlitePool};
use tempfile::TempDir;
use tokio::task::JoinSet;

/// One backend under test: the store, plus direct access for reading rows back.
enum Db {
    Postgres(PgPool),
    // The directory is held, not read: the database file lives as long as the test.
    Sqlite(SqlitePool, #[allow(dead_code)] TempDir),
    Memory(MemoryUserStore),
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
            Self::Memory(store) => Arc::new(store.clone()),
        }
    }

    async fn row(&self, id: &str) -> Option<Row> {
        let row: Option<RowTuple> = match self {
            Self::Memory(store) => store.user(id).map(|user| {
                (
                    user.email,
                    user.first_name,
                    user.last_name,
                    user.tier,
                    user.deleted,
                    user.clerk_updated_at_ms,
                    user.last_seen_at.is_some(),
                )
            }),
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

    /// What an app's billing code does: sets a tier directly.
    async fn set_tier(&self, id: &str, tier: &str) {
        match self {
            Self::Postgres(pool) => sqlx::query("UPDATE users SET tier = $1 WHERE id = $2")
                .bind(tier)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ()),
            Self::Sqlite(pool, _) => sqlx::query("UPDATE users SET tier = ?1 WHERE id = ?2")
                .bind(tier)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ()),
            Self::Memory(store) => {
                assert!(store.set_tier(id, tier));
                Ok(())
            }
        }
        .unwrap();
    }

    async fn mark_deleted(&self, id: &str) {
        match self {
            Self::Memory(store) => {
                let delete = UserChange::Delete {
                    user_id: id.to_owned(),
                    version_ms: None,
                };
                store
                    .apply_webhook("msg_mark_deleted", &delete)
                    .await
                    .map(|_| ())
                    .map_err(|error| sqlx::Error::Protocol(error.to_string()))
            }
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
            Self::Memory(store) => Ok(i64::try_from(store.len()).unwrap()),
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

fn active(tier: &str, inserted: bool, has_email: bool) -> UpsertOutcome {
    UpsertOutcome::Active {
        tier: tier.into(),
        inserted,
        has_email,
    }
}

async fn insert_then_update_is_idempotent(db: &Db) {
    let store = db.store();
    let snapshot = profile("user_1", Some("a@example.com"), Some(1_000));
    assert_eq!(
        store.upsert(&snapshot).await.unwrap(),
        active("free", true, true)
    );
    assert_eq!(
        store.upsert(&snapshot).await.unwrap(),
        active("free", false, true)
    );
    // A snapshot without the email still reports the row's.
    assert_eq!(
        store.upsert(&UserProfile::new("user_1")).await.unwrap(),
        active("free", false, true)
    );
    assert_eq!(
        store.upsert(&UserProfile::new("user_2")).await.unwrap(),
        active("free", true, false)
    );
    assert_eq!(db.users().await, 2);
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

/// Two text columns of a row, in both dialects.
async fn columns(
    db: &Db,
    id: &str,
    a: &'static str,
    b: &'static str,
) -> (Option<String>, Option<String>) {
    let sql = format!("SELECT {a}, {b} FROM users WHERE id = '{id}'");
    match db {
        Db::Memory(store) => {
            let user = store.user(id).unwrap();
            let field = |name: &str| match name {
                "email" => user.email.clone(),
                "first_name" => user.first_name.clone(),
                "last_name" => user.last_name.clone(),
                "username" => user.username.clone(),
                "image_url" => user.image_url.clone(),
                other => panic!("no column {other}"),
            };
            Ok((field(a), field(b)))
        }
        Db::Postgres(pool) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
        }
        Db::Sqlite(pool, _) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
        }
    }
    .unwrap()
}

/// The case of issue 12 §4: claims that carry only the email, at a version a little newer than
/// a webhook that carries the names, must not make the names lose; a later backfill fills what
/// the row still lacks.
async fn partial_snapshots_only_shadow_the_fields_they_carry(db: &Db) {
    let store = db.store();
    // Token claims {email} at iat = 2,000,000 s.
    store
        .upsert(&profile(
            "user_ada",
            Some("ada@claims.example"),
            Some(2_000_000_000),
        ))
        .await
        .unwrap();
    // A `user.updated` webhook 500 s older with the email and the names.
    let mut webhook = profile("user_ada", Some("ada@older.example"), Some(1_999_500_000));
    webhook.first_name = Some("Ada".into());
    webhook.last_name = Some("Lovelace".into());
    assert_eq!(
        store
            .apply_webhook("msg_partial", &UserChange::Upsert(webhook))
            .await
            .unwrap(),
        WebhookOutcome::Applied
    );
    let row = db.row("user_ada").await.unwrap();
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
    assert_eq!(row.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(
        row.email.as_deref(),
        Some("ada@claims.example"),
        "the newer email stays"
    );
    assert_eq!(
        row.version_ms,
        Some(2_000_000_000),
        "the newest version applied"
    );

    // A backfill snapshot between the two: fills the username the row lacks, leaves the
    // newer email alone, and is reported as an update (then unchanged when run again).
    let mut backfill = profile(
        "user_ada",
        Some("ada@backfill.example"),
        Some(1_999_800_000),
    );
    backfill.first_name = Some("Ada".into());
    backfill.last_name = Some("Lovelace".into());
    backfill.username = Some("ada".into());
    let counts = store.import(std::slice::from_ref(&backfill)).await.unwrap();
    assert_eq!((counts.updated, counts.unchanged), (1, 0), "{counts:?}");
    let counts = store.import(std::slice::from_ref(&backfill)).await.unwrap();
    assert_eq!((counts.updated, counts.unchanged), (0, 1), "{counts:?}");
    assert_eq!(
        columns(db, "user_ada", "username", "email").await,
        (Some("ada".into()), Some("ada@claims.example".into()))
    );
    let row = db.row("user_ada").await.unwrap();
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
    assert_eq!(row.version_ms, Some(2_000_000_000));

    // A newer snapshot of one field moves that field only.
    let mut rename = profile("user_ada", None, Some(2_100_000_000));
    rename.last_name = Some("King".into());
    store.upsert(&rename).await.unwrap();
    let row = db.row("user_ada").await.unwrap();
    assert_eq!(
        (
            row.email.as_deref(),
            row.first_name.as_deref(),
            row.last_name.as_deref()
        ),
        (Some("ada@claims.example"), Some("Ada"), Some("King"))
    );
    // ...and an older one of that field no longer can.
    let mut stale = profile("user_ada", None, Some(2_050_000_000));
    stale.last_name = Some("Byron".into());
    store.upsert(&stale).await.unwrap();
    assert_eq!(
        db.row("user_ada").await.unwrap().last_name.as_deref(),
        Some("King")
    );
}

async fn tier_is_set_on_insert_only(db: &Db) {
    let store = db.store();
    store.upsert(&UserProfile::new("user_1")).await.unwrap();
    db.set_tier("user_1", "pro").await;
    let outcome = store
        .upsert(&profile("user_1", Some("a@example.com"), Some(9_000)))
        .await
        .unwrap();
    assert_eq!(outcome, active("pro", false, true));
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

async fn old_webhook_delivery_ids_are_pruned(db: &Db) {
    let store = db.store();
    let change = UserChange::Upsert(profile("user_1", Some("a@example.com"), Some(1_000)));
    store.apply_webhook("msg_old", &change).await.unwrap();
    // Kept for 30 days: nothing that recent is pruned.
    let month = std::time::Duration::from_secs(30 * 24 * 3600);
    assert_eq!(store.prune_webhook_deliveries(month).await.unwrap(), 0);
    assert_eq!(
        store.apply_webhook("msg_old", &change).await.unwrap(),
        WebhookOutcome::Duplicate
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        store
            .prune_webhook_deliveries(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    // Forgotten: a redelivery now is applied again (as a no-op under the versioned rules).
    assert_eq!(
        store.apply_webhook("msg_old", &change).await.unwrap(),
        WebhookOutcome::Applied
    );
    assert_eq!(
        db.row("user_1").await.unwrap().email.as_deref(),
        Some("a@example.com")
    );
}

/// Instantiates every behaviour test once per backend.
macro_rules! on_every_backend {
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
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&Db::Memory(MemoryUserStore::new())).await;
                }
            )*
        }
    };
}

on_every_backend!(
    insert_then_update_is_idempotent,
    older_snapshot_never_overwrites_a_newer_one,
    null_never_erases_a_known_field,
    unversioned_snapshot_does_not_overwrite_a_versioned_row,
    partial_snapshots_only_shadow_the_fields_they_carry,
    tier_is_set_on_insert_only,
    deleted_user_is_not_resurrected_or_changed,
    concurrent_upserts_leave_one_row_per_user,
    webhook_delivery_is_applied_once,
    webhook_delete_leaves_a_tombstone_no_event_undoes,
    old_webhook_delivery_ids_are_pruned,
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
            .await
            .unwrap();
        assert_eq!(
            store.upsert(&UserProfile::new("user_1")).await.unwrap(),
            active("free", true, false)
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
            let error = PgUserStore::new(pool.clone())
                .with_table(bad)
                .await
                .unwrap_err();
            assert_eq!(error.setting(), "table", "{bad}");
        }
    }

    #[sqlx::test(migrations = false)]
    async fn custom_tables_are_checked_for_every_column(pool: PgPool) {
        clerk_sync::migrate(&pool).await.unwrap();
        let error = PgUserStore::new(pool.clone())
            .with_table("no_such_table")
            .await
            .unwrap_err();
        assert_eq!(error.setting(), "table");
        assert!(error.to_string().contains("does not exist"), "{error}");

        // A table made before the per-field versions: the error names what to add.
        for sql in [
            "CREATE TABLE old_users (LIKE users INCLUDING ALL)",
            "ALTER TABLE old_users DROP COLUMN email_version, DROP COLUMN image_url_version",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        let error = PgUserStore::new(pool.clone())
            .with_table("old_users")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("email_version, image_url_version"),
            "{message}"
        );
        assert!(!message.contains("first_name_version"), "{message}");
        assert!(message.contains("ALTER TABLE"), "{message}");
    }

    #[sqlx::test(migrations = false)]
    async fn the_field_version_migration_versions_existing_rows(pool: PgPool) {
        // The database as the previous release left it: every migration before the field
        // versions.
        let dir = tempfile::tempdir().unwrap();
        let mut files: Vec<_> = std::fs::read_dir("migrations/postgres")
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        let at = files
            .iter()
            .position(|file| file.to_str().unwrap().ends_with("_field_versions.sql"))
            .unwrap();
        for file in &files[..at] {
            std::fs::copy(file, dir.path().join(file.file_name().unwrap())).unwrap();
        }
        let mut old = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
        old.dangerous_set_table_name("_clerk_sync_migrations");
        old.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO users (id, email, first_name, clerk_updated_at) VALUES \
             ('user_old', 'old@example.com', NULL, to_timestamp(1000)), \
             ('user_unversioned', 'u@example.com', 'U', NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();

        clerk_sync::migrate(&pool).await.unwrap();
        let versions: Vec<(String, Option<f64>, Option<f64>)> = sqlx::query_as(
            "SELECT id, extract(epoch FROM email_version)::float8, \
             extract(epoch FROM first_name_version)::float8 FROM users ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            versions,
            [
                ("user_old".to_owned(), Some(1000.0), None),
                ("user_unversioned".to_owned(), None, None)
            ]
        );
        // The names of the versioned row are now fillable by an older snapshot.
        let mut names = UserProfile::new("user_old");
        names.first_name = Some("Olga".into());
        names.version_ms = Some(500_000);
        PgUserStore::new(pool.clone()).upsert(&names).await.unwrap();
        let first: Option<String> =
            sqlx::query_scalar("SELECT first_name FROM users WHERE id = 'user_old'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(first.as_deref(), Some("Olga"));
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
