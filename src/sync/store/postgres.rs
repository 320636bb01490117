//! [`PgUserStore`]: the PostgreSQL backend, and [`migrate`].

use std::fmt;
use std::sync::Arc;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::{StoreError, StoreFuture, UpsertOutcome, UserStore};
use crate::error::ConfigError;
use crate::sync::profile::UserProfile;

/// The table that records which of this crate's migrations ran. It is not `_sqlx_migrations`,
/// so the app's own sqlx migrations and ours never see each other as "missing".
const MIGRATIONS_TABLE: &str = "_clerk_sync_migrations";

/// Creates or updates the tables this crate needs (`users`).
///
/// Safe to call at every start; concurrent callers are serialised by sqlx's migration lock.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("migrations/postgres");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(pool).await
}

/// Stores users in PostgreSQL (Neon, RDS, local).
///
/// The upsert is one statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE deleted_at IS
/// NULL RETURNING tier`), so it is atomic and idempotent. It runs as an unnamed (not cached)
/// prepared statement and uses no session state, so it works behind PgBouncer in transaction
/// mode (Neon's `-pooler` endpoints) whatever its version.
#[derive(Clone)]
pub struct PgUserStore {
    pool: PgPool,
    table: Arc<str>,
    upsert_sql: Arc<str>,
}

impl fmt::Debug for PgUserStore {
    // The pool's options hold the database password: only the table is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUserStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PgUserStore {
    /// A store writing to the `users` table created by [`migrate`].
    pub fn new(pool: PgPool) -> Self {
        Self::build(pool, "users")
    }

    /// Writes to another table with the same columns (see the README's data model), for apps
    /// that already have a users table. The name may be schema-qualified (`app.users`); it must
    /// be plain identifiers.
    pub fn with_table(self, table: &str) -> Result<Self, ConfigError> {
        let valid_part = |part: &str| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && part.len() <= 63
        };
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|part| valid_part(part)) {
            return Err(ConfigError::new(
                "table",
                format!("`{table}` is not a plain (optionally schema-qualified) table name"),
            ));
        }
        let quoted = parts
            .iter()
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Self::build(self.pool, &quoted))
    }

    fn build(pool: PgPool, table: &str) -> Self {
        // A field is replaced only by a known value from a snapshot at least as new as the
        // stored one; `>=` makes redelivery of the same snapshot a no-op rather than a skip.
        let newer =
            "(u.clerk_updated_at IS NULL OR EXCLUDED.clerk_updated_at >= u.clerk_updated_at)";
        let field = |name: &str| {
            format!(
                "{name} = CASE WHEN {newer} THEN COALESCE(EXCLUDED.{name}, u.{name}) ELSE u.{name} END"
            )
        };
        let upsert_sql = format!(
            "INSERT INTO {table} AS u \
                 (id, email, first_name, last_name, username, image_url, clerk_updated_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::bigint / 1000.0), now()) \
             ON CONFLICT (id) DO UPDATE SET \
                 {email}, {first_name}, {last_name}, {username}, {image_url}, \
                 updated_at = CASE WHEN {newer} AND EXCLUDED.clerk_updated_at IS NOT NULL \
                     THEN now() ELSE u.updated_at END, \
                 clerk_updated_at = GREATEST(u.clerk_updated_at, EXCLUDED.clerk_updated_at), \
                 last_seen_at = now() \
             WHERE u.deleted_at IS NULL \
             RETURNING tier, (xmax = 0) AS inserted",
            email = field("email"),
            first_name = field("first_name"),
            last_name = field("last_name"),
            username = field("username"),
            image_url = field("image_url"),
        );
        Self {
            pool,
            table: table.into(),
            upsert_sql: upsert_sql.into(),
        }
    }

    /// The pool this store writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl UserStore for PgUserStore {
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        Box::pin(async move {
            // Built from a validated, quoted identifier and fixed text only.
            let row = sqlx::query(AssertSqlSafe(self.upsert_sql.clone()))
                .persistent(false)
                .bind(&profile.id)
                .bind(&profile.email)
                .bind(&profile.first_name)
                .bind(&profile.last_name)
                .bind(&profile.username)
                .bind(&profile.image_url)
                .bind(profile.version_ms)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::Database)?;
            // No row back means the conflict's `WHERE deleted_at IS NULL` failed: deleted.
            Ok(match row {
                Some(row) => UpsertOutcome::Active {
                    tier: row.try_get("tier")?,
                    inserted: row.try_get("inserted")?,
                },
                None => UpsertOutcome::Deleted,
            })
        })
    }
}
