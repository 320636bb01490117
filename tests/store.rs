//! `PgUserStore::upsert` against real PostgreSQL: idempotent, versioned, no NULL overwrites,
//! tier on insert only, deleted users never resurrected.
#![allow(clippy::unwrap_used)]

use clerk_sync::{PgUserStore, UpsertOutcome, UserProfile, UserStore};
use sqlx::PgPool;

fn profile(id: &str, email: Option<&str>, version_ms: Option<i64>) -> UserProfile {
    let mut profile = UserProfile::new(id);
    profile.email = email.map(str::to_owned);
    profile.version_ms = version_ms;
    profile
}

async fn email(pool: &PgPool, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn row(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT row_to_json(u)::text FROM users u WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn active(tier: &str, inserted: bool) -> UpsertOutcome {
    UpsertOutcome::Active {
        tier: tier.into(),
        inserted,
    }
}

#[sqlx::test(migrations = false)]
async fn insert_then_update_is_idempotent(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgUserStore::new(pool.clone());
    let snapshot = profile("user_1", Some("a@example.com"), Some(1_000));
    assert_eq!(store.upsert(&snapshot).await.unwrap(), active("free", true));
    assert_eq!(
        store.upsert(&snapshot).await.unwrap(),
        active("free", false)
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(
        email(&pool, "user_1").await.as_deref(),
        Some("a@example.com")
    );
}

#[sqlx::test(migrations = false)]
async fn older_snapshot_never_overwrites_a_newer_one(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgUserStore::new(pool.clone());
    store
        .upsert(&profile("user_1", Some("new@example.com"), Some(2_000)))
        .await
        .unwrap();
    let before = row(&pool, "user_1").await;
    store
        .upsert(&profile("user_1", Some("old@example.com"), Some(1_000)))
        .await
        .unwrap();
    assert_eq!(
        email(&pool, "user_1").await.as_deref(),
        Some("new@example.com")
    );
    let version: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM clerk_updated_at) * 1000)::bigint FROM users",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, 2_000);
    // Only `last_seen_at` moved.
    let strip = |json: &str| {
        let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
        value.as_object_mut().unwrap().remove("last_seen_at");
        value
    };
    assert_eq!(strip(&before), strip(&row(&pool, "user_1").await));

    store
        .upsert(&profile("user_1", Some("newest@example.com"), Some(3_000)))
        .await
        .unwrap();
    assert_eq!(
        email(&pool, "user_1").await.as_deref(),
        Some("newest@example.com")
    );
}

#[sqlx::test(migrations = false)]
async fn null_never_erases_a_known_field(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgUserStore::new(pool.clone());
    let mut full = profile("user_1", Some("a@example.com"), Some(1_000));
    full.first_name = Some("Ada".into());
    store.upsert(&full).await.unwrap();

    let mut partial = profile("user_1", None, Some(2_000));
    partial.last_name = Some("Lovelace".into());
    store.upsert(&partial).await.unwrap();

    let (email, first, last): (Option<String>, Option<String>, Option<String>) =
        sqlx::query_as("SELECT email, first_name, last_name FROM users WHERE id = 'user_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some("a@example.com"));
    assert_eq!(first.as_deref(), Some("Ada"));
    assert_eq!(last.as_deref(), Some("Lovelace"));
}

#[sqlx::test(migrations = false)]
async fn unversioned_snapshot_does_not_overwrite_a_versioned_row(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgUserStore::new(pool.clone());
    store.upsert(&UserProfile::new("user_1")).await.unwrap();
    // An unversioned snapshot fills a row that never had a versioned one...
    store
        .upsert(&profile("user_1", Some("first@example.com"), None))
        .await
        .unwrap();
    assert_eq!(
        email(&pool, "user_1").await.as_deref(),
        Some("first@example.com")
    );
    store
        .upsert(&profile(
            "user_1",
            Some("versioned@example.com"),
            Some(5_000),
        ))
        .await
        .unwrap();
    // ...but never overrides a versioned one.
    store
        .upsert(&profile("user_1", Some("stale@example.com"), None))
        .await
        .unwrap();
    assert_eq!(
        email(&pool, "user_1").await.as_deref(),
        Some("versioned@example.com")
    );
}

#[sqlx::test(migrations = false)]
async fn tier_is_set_on_insert_only(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgUserStore::new(pool.clone());
    store.upsert(&UserProfile::new("user_1")).await.unwrap();
    sqlx::query("UPDATE users SET tier = 'pro'")
        .execute(&pool)
        .await
        .unwrap();
    let outcome = store
        .upsert(&profile("user_1", Some("a@example.com"), Some(9_000)))
        .await
        .unwrap();
    assert_eq!(outcome, active("pro", false));
}

#[sqlx::test(migrations = false)]
async fn deleted_user_is_not_resurrected_or_changed(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let store = PgUserStore::new(pool.clone());
    store
        .upsert(&profile("user_1", Some("a@example.com"), Some(1_000)))
        .await
        .unwrap();
    sqlx::query("UPDATE users SET deleted_at = now(), email = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let before = row(&pool, "user_1").await;
    let outcome = store
        .upsert(&profile("user_1", Some("back@example.com"), Some(9_000)))
        .await
        .unwrap();
    assert_eq!(outcome, UpsertOutcome::Deleted);
    assert_eq!(before, row(&pool, "user_1").await);
}

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
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM app.members")
        .fetch_one(&pool)
        .await
        .unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((members, users), (1, 0));

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
