//! [`SqliteUserStore`]: the embedded backend, and [`migrate_sqlite`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{SqliteConnection, SqlitePool};

use super::sql::{self, GREATEST_VERSION, unique_now_ms};
use super::sqlite_orgs::{SqliteOrganizations, record_delivery};
use super::{
    ImportCounts, InvalidationChannel, OrganizationStore, StoreFuture, UpsertOutcome, UserChange,
    UserProfile, UserStore, WebhookOutcome,
};
use crate::time::unix_now_ms;

/// Records which of this crate's SQLite migrations ran (kept apart from `_sqlx_migrations`).
const MIGRATIONS_TABLE: &str = "_clerk_sync_migrations";

/// Creates or updates the tables this crate needs in a SQLite database (`users`,
/// `clerk_webhook_events`, `organizations`, `organization_memberships`); the mirror of
/// [`crate::migrate`].
pub async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("migrations/sqlite");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(pool).await
}

/// Stores users in a SQLite file: the embedded default, for development and for apps that run
/// on one machine. Same rules as [`crate::PgUserStore`] (one statement, versioned, tier on
/// insert only, no NULL overwrites, no resurrection); timestamps are Unix milliseconds.
///
/// One process only: there is no cross-process invalidation (no `LISTEN/NOTIFY`), and the
/// shared rate-limit store is Postgres-only (use [`crate::MemoryRateLimitStore`]).
#[derive(Clone)]
pub struct SqliteUserStore {
    pool: SqlitePool,
    upsert_sql: String,
    delete_sql: String,
    import_sql: String,
    organizations: SqliteOrganizations,
}

impl std::fmt::Debug for SqliteUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUserStore").finish_non_exhaustive()
    }
}

impl SqliteUserStore {
    /// A store on an existing pool; run [`migrate_sqlite`] on it first.
    pub fn new(pool: SqlitePool) -> Self {
        let fields = sql::versioned_field_updates(&sql::PROFILE_COLUMNS);
        let any_applies = sql::any_field_applies(&sql::PROFILE_COLUMNS);
        let version_columns = sql::version_columns(&sql::PROFILE_COLUMNS);
        let version_values =
            sql::version_values(&sql::PROFILE_COLUMNS, |at| format!("?{}", at + 2), "?7");
        // ?8: is this a visit (the layer) or not (a webhook); ?9: now, in milliseconds.
        let upsert_sql = format!(
            "INSERT INTO users AS u \
                 (id, email, first_name, last_name, username, image_url, clerk_updated_at, \
                  {version_columns}, last_seen_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {version_values}, \
                     CASE WHEN ?8 THEN ?9 END, ?9, ?9) \
             ON CONFLICT (id) DO UPDATE SET \
                 {fields}, \
                 updated_at = CASE WHEN {any_applies} THEN ?9 ELSE u.updated_at END, \
                 clerk_updated_at = {GREATEST_VERSION}, \
                 last_seen_at = CASE WHEN ?8 THEN ?9 ELSE u.last_seen_at END \
             WHERE u.deleted_at IS NULL \
             RETURNING tier, created_at = ?9 AND updated_at = ?9 AS inserted, \
                 email IS NOT NULL AS has_email"
        );
        let cleared = sql::cleared_fields(&sql::PROFILE_COLUMNS);
        let delete_sql = format!(
            "INSERT INTO users AS u (id, clerk_updated_at, deleted_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?3, ?3) \
             ON CONFLICT (id) DO UPDATE SET \
                 {cleared}, updated_at = ?3, \
                 deleted_at = COALESCE(u.deleted_at, ?3), \
                 clerk_updated_at = {GREATEST_VERSION}"
        );
        let changes = sql::import_update_condition(&sql::PROFILE_COLUMNS, "IS NOT");
        // ?8: now, in milliseconds. A row comes back only when it was inserted or changed.
        let import_sql = format!(
            "INSERT INTO users AS u \
                 (id, email, first_name, last_name, username, image_url, clerk_updated_at, \
                  {version_columns}, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {version_values}, ?8, ?8) \
             ON CONFLICT (id) DO UPDATE SET \
                 {fields}, \
                 clerk_updated_at = {GREATEST_VERSION}, \
                 updated_at = ?8 \
             WHERE {changes} \
             RETURNING 1"
        );
        Self {
            organizations: SqliteOrganizations::new(pool.clone()),
            pool,
            upsert_sql,
            delete_sql,
            import_sql,
        }
    }

    /// A reconcile session of `kind` on one connection of the store's pool.
    pub(crate) async fn reconcile_session(
        &self,
        kind: super::reconcile::Kind,
    ) -> Result<Box<dyn super::reconcile::ReconcileSession>, super::StoreError> {
        let session =
            super::sqlite_reconcile::SqliteReconcile::open(&self.pool, kind, &self.delete_sql)
                .await?;
        Ok(Box::new(session))
    }

    /// Opens (creating if missing) the database at `url` (`sqlite://path`, `sqlite::memory:`,
    /// or a plain file path) in WAL mode with a 5 s busy timeout, and migrates it.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        migrate_sqlite(&pool).await?;
        Ok(Self::new(pool))
    }

    /// The pool this store writes through.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn upsert_on(
        &self,
        conn: &mut SqliteConnection,
        profile: &UserProfile,
        seen: bool,
    ) -> Result<Option<SqliteRow>, sqlx::Error> {
        let query = sqlx::query(sqlx::AssertSqlSafe(self.upsert_sql.as_str()));
        sql::bind_profile(query, profile)
            .bind(seen)
            .bind(unique_now_ms())
            .fetch_optional(conn)
            .await
    }

    async fn apply_in_transaction(
        &self,
        delivery_id: &str,
        change: &UserChange,
    ) -> Result<WebhookOutcome, sqlx::Error> {
        let now = unix_now_ms();
        let mut tx = self.pool.begin().await?;
        if !record_delivery(&mut tx, delivery_id, now).await? {
            tx.rollback().await?;
            return Ok(WebhookOutcome::Duplicate);
        }
        let outcome = match change {
            UserChange::Upsert(profile) => match self.upsert_on(&mut tx, profile, false).await? {
                Some(_) => WebhookOutcome::Applied,
                None => WebhookOutcome::UserDeleted,
            },
            UserChange::Delete {
                user_id,
                version_ms,
            } => {
                sqlx::query(sqlx::AssertSqlSafe(self.delete_sql.as_str()))
                    .bind(user_id)
                    .bind(version_ms)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                WebhookOutcome::Applied
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

impl UserStore for SqliteUserStore {
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            let row = self.upsert_on(&mut conn, profile, true).await?;
            Ok(sql::upsert_outcome(row)?)
        })
    }

    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a UserChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        Box::pin(async move { Ok(self.apply_in_transaction(delivery_id, change).await?) })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .persistent(false)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn import<'a>(&'a self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ImportCounts> {
        Box::pin(async move {
            let now = unix_now_ms();
            let mut counts = ImportCounts::default();
            // IMMEDIATE: take the write lock up front, since the first statement only reads.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            for profile in super::newest_per_user(profiles) {
                // Read the row's state first: SQLite returns no row both for "unchanged" and
                // for "deleted", and the transaction makes the read and the write one step.
                let existing: Option<(bool,)> =
                    sqlx::query_as("SELECT deleted_at IS NOT NULL FROM users WHERE id = ?1")
                        .bind(&profile.id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if existing == Some((true,)) {
                    counts.deleted += 1;
                    continue;
                }
                let query = sqlx::query(sqlx::AssertSqlSafe(self.import_sql.as_str()));
                let written = sql::bind_profile(query, profile)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                match (existing.is_some(), written) {
                    (false, _) => counts.inserted += 1,
                    (true, true) => counts.updated += 1,
                    (true, false) => counts.unchanged += 1,
                }
            }
            tx.commit().await?;
            Ok(counts)
        })
    }

    fn prune_webhook_deliveries(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let cutoff = unix_now_ms()
                .saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
            let done = sqlx::query("DELETE FROM clerk_webhook_events WHERE received_at < ?1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    /// None: a SQLite database belongs to one machine, usually one process.
    fn invalidation_channel(&self) -> Option<std::sync::Arc<dyn InvalidationChannel>> {
        None
    }

    /// The `organizations` and `organization_memberships` tables created by
    /// [`migrate_sqlite`].
    fn organizations(&self) -> Option<&dyn OrganizationStore> {
        Some(&self.organizations)
    }
}
