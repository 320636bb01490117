//! [`PgUserStore`]: the PostgreSQL backend, and [`migrate`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::postgres_orgs::{PgOrganizations, record_delivery};
use super::sql;
use super::{
    ImportCounts, InvalidationChannel, OrganizationStore, StoreFuture, UpsertOutcome, UserChange,
    UserProfile, UserStore, WebhookOutcome,
};
use crate::error::ConfigError;
use crate::invalidate::PgChannel;

/// Most parameter bytes in one import statement. sqlx 0.9.0 leaves Nagle's algorithm on
/// (sqlx issue #4335), so a message larger than the socket's initial 16 KiB send buffer is
/// sent in two parts and the second waits for the server's delayed ACK: ~40 ms per
/// statement, measured here as 10k users/s for 500-row statements. Statements under the
/// buffer size go out whole; a 500-user page becomes a handful of them in one transaction.
const IMPORT_STATEMENT_BYTES: usize = 12 * 1024;

/// A row's share of a statement's `Bind` message: its values plus a 4-byte length per array
/// element.
pub(super) trait EncodedLen {
    fn encoded_len(&self) -> usize;
}

fn text_len(value: &Option<String>) -> usize {
    value.as_ref().map_or(0, String::len) + 4
}

impl EncodedLen for UserProfile {
    fn encoded_len(&self) -> usize {
        self.id.len()
            + 4
            + text_len(&self.email)
            + text_len(&self.first_name)
            + text_len(&self.last_name)
            + text_len(&self.username)
            + text_len(&self.image_url)
            + 12
    }
}

impl EncodedLen for super::reconcile::Snapshot {
    fn encoded_len(&self) -> usize {
        let keys: usize = self.keys.iter().map(|key| key.len() + 4).sum();
        keys + self.fields.iter().map(text_len).sum::<usize>() + 12
    }
}

impl<T: EncodedLen> EncodedLen for &T {
    fn encoded_len(&self) -> usize {
        (**self).encoded_len()
    }
}

/// `rows` cut into runs of at most [`IMPORT_STATEMENT_BYTES`] (at least one row each), one
/// statement per run.
pub(super) fn statement_chunks<P: EncodedLen>(rows: &[P]) -> impl Iterator<Item = &[P]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let take = rest
            .iter()
            .take_while(|row| {
                bytes += row.encoded_len();
                bytes <= IMPORT_STATEMENT_BYTES
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

/// The table that records which of this crate's migrations ran. It is not `_sqlx_migrations`,
/// so the app's own sqlx migrations and ours never see each other as "missing".
const MIGRATIONS_TABLE: &str = "_clerk_sync_migrations";

/// Creates or updates the tables this crate needs (`users`, `clerk_webhook_events`,
/// `clerk_rate_limits`, `organizations`, `organization_memberships`).
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
///
/// Its default invalidation channel is [`PgChannel`] on the same pool (`LISTEN` holds one
/// connection while the handle's background task runs, and needs a session: behind a
/// PgBouncer transaction-mode pool, such as Neon's `-pooler` endpoints, give the builder a
/// `PgChannel` on a direct connection, or a Redis channel). Webhook delivery ids older than 30
/// days are deleted by the handle's background task.
#[derive(Clone)]
pub struct PgUserStore {
    pub(super) pool: PgPool,
    pub(super) table: Arc<str>,
    upsert_sql: Arc<str>,
    pub(super) delete_sql: Arc<str>,
    import_sql: Arc<str>,
    organizations: PgOrganizations,
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
    /// be plain identifiers. The table's columns are checked now: a missing one (say the
    /// per-field version columns of an older table; the README has the `ALTER TABLE`) is a
    /// [`ConfigError`] that names them all.
    pub async fn with_table(self, table: &str) -> Result<Self, ConfigError> {
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
        let (schema, name) = match parts.as_slice() {
            [schema, name] => (Some(*schema), *name),
            _ => (None, table),
        };
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
        )
        .persistent(false)
        .bind(schema)
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| {
            ConfigError::new(
                "table",
                format!("could not read the columns of `{table}`: {error}"),
            )
        })?;
        if columns.is_empty() {
            return Err(ConfigError::new(
                "table",
                format!("`{table}` does not exist (or has no columns visible to this role)"),
            ));
        }
        let missing: Vec<&str> = sql::REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|needed| !columns.iter().any(|column| column == needed))
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::new(
                "table",
                format!(
                    "`{table}` lacks the column(s) {}; see the README's data model for the \
                     ALTER TABLE statements",
                    missing.join(", ")
                ),
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
        let fields = sql::versioned_field_updates(&sql::PROFILE_COLUMNS);
        let any_applies = sql::any_field_applies(&sql::PROFILE_COLUMNS);
        let version_columns = sql::version_columns(&sql::PROFILE_COLUMNS);
        let version = "to_timestamp($7::bigint / 1000.0)";
        let version_values = sql::version_values(
            &sql::PROFILE_COLUMNS,
            |at| format!("${}::text", at + 2),
            version,
        );
        // `$8` says whether this is a visit (the layer) or not (a webhook).
        let upsert_sql = format!(
            "INSERT INTO {table} AS u \
                 (id, email, first_name, last_name, username, image_url, clerk_updated_at, \
                  {version_columns}, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, {version}, {version_values}, \
                     CASE WHEN $8::boolean THEN now() END) \
             ON CONFLICT (id) DO UPDATE SET \
                 {fields}, \
                 updated_at = CASE WHEN {any_applies} THEN now() ELSE u.updated_at END, \
                 clerk_updated_at = GREATEST(u.clerk_updated_at, excluded.clerk_updated_at), \
                 last_seen_at = CASE WHEN $8::boolean THEN now() ELSE u.last_seen_at END \
             WHERE u.deleted_at IS NULL \
             RETURNING tier, (xmax = 0) AS inserted, (email IS NOT NULL) AS has_email"
        );
        // A delete of an unknown user leaves a tombstone, so a late `user.created` cannot
        // create it; an existing row keeps its id and tier and loses its personal fields.
        let cleared = sql::cleared_fields(&sql::PROFILE_COLUMNS);
        let delete_sql = format!(
            "INSERT INTO {table} AS u (id, clerk_updated_at, deleted_at) \
             VALUES ($1, to_timestamp($2::bigint / 1000.0), now()) \
             ON CONFLICT (id) DO UPDATE SET \
                 {cleared}, updated_at = now(), \
                 deleted_at = COALESCE(u.deleted_at, now()), \
                 clerk_updated_at = GREATEST(u.clerk_updated_at, excluded.clerk_updated_at)"
        );
        // A page in one statement: the arrays become rows, the conflict update only fires
        // when the snapshot changes the row, and the deleted rows among the ids are counted
        // from the statement's snapshot (a live row is never deleted by this statement).
        let changes = sql::import_update_condition(&sql::PROFILE_COLUMNS, "IS DISTINCT FROM");
        let import_version = "to_timestamp(version_ms / 1000.0)";
        let import_version_values = sql::version_values(
            &sql::PROFILE_COLUMNS,
            |at| sql::PROFILE_COLUMNS[at].to_owned(),
            import_version,
        );
        let import_sql = format!(
            "WITH input AS ( \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                                      $5::text[], $6::text[], $7::bigint[]) \
                     AS t(id, email, first_name, last_name, username, image_url, version_ms) \
             ), written AS ( \
                 INSERT INTO {table} AS u \
                     (id, email, first_name, last_name, username, image_url, clerk_updated_at, \
                      {version_columns}) \
                 SELECT id, email, first_name, last_name, username, image_url, \
                        {import_version}, {import_version_values} \
                 FROM input \
                 ON CONFLICT (id) DO UPDATE SET \
                     {fields}, \
                     clerk_updated_at = GREATEST(u.clerk_updated_at, excluded.clerk_updated_at), \
                     updated_at = now() \
                 WHERE {changes} \
                 RETURNING (xmax = 0) AS inserted \
             ) \
             SELECT count(*) FILTER (WHERE inserted) AS inserted, \
                    count(*) FILTER (WHERE NOT inserted) AS updated, \
                    (SELECT count(*) FROM {table} d JOIN input i ON d.id = i.id \
                     WHERE d.deleted_at IS NOT NULL) AS deleted \
             FROM written"
        );
        Self {
            organizations: PgOrganizations::new(pool.clone()),
            pool,
            table: table.into(),
            upsert_sql: upsert_sql.into(),
            delete_sql: delete_sql.into(),
            import_sql: import_sql.into(),
        }
    }

    async fn upsert_on(
        &self,
        conn: &mut PgConnection,
        profile: &UserProfile,
        seen: bool,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        // Built from a validated, quoted identifier and fixed text only.
        let query = sqlx::query(AssertSqlSafe(self.upsert_sql.clone())).persistent(false);
        sql::bind_profile(query, profile)
            .bind(seen)
            .fetch_optional(conn)
            .await
    }

    async fn apply_in_transaction(
        &self,
        delivery_id: &str,
        change: &UserChange,
    ) -> Result<WebhookOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !record_delivery(&mut tx, delivery_id).await? {
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
                sqlx::query(AssertSqlSafe(self.delete_sql.clone()))
                    .persistent(false)
                    .bind(user_id)
                    .bind(version_ms)
                    .execute(&mut *tx)
                    .await?;
                WebhookOutcome::Applied
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn import_chunk(
        &self,
        conn: &mut PgConnection,
        profiles: &[&UserProfile],
    ) -> Result<ImportCounts, sqlx::Error> {
        let column = |field: fn(&UserProfile) -> &Option<String>| -> Vec<Option<&str>> {
            profiles.iter().map(|p| field(p).as_deref()).collect()
        };
        let ids: Vec<&str> = profiles.iter().map(|p| p.id.as_str()).collect();
        let versions: Vec<Option<i64>> = profiles.iter().map(|p| p.version_ms).collect();
        let row = sqlx::query(AssertSqlSafe(self.import_sql.clone()))
            .persistent(false)
            .bind(ids)
            .bind(column(|p| &p.email))
            .bind(column(|p| &p.first_name))
            .bind(column(|p| &p.last_name))
            .bind(column(|p| &p.username))
            .bind(column(|p| &p.image_url))
            .bind(versions)
            .fetch_one(conn)
            .await?;
        let count = |name: &str| -> Result<u64, sqlx::Error> {
            let value: i64 = sqlx::Row::try_get(&row, name)?;
            Ok(value.unsigned_abs())
        };
        let (inserted, updated, deleted) =
            (count("inserted")?, count("updated")?, count("deleted")?);
        Ok(ImportCounts {
            inserted,
            updated,
            deleted,
            unchanged: (profiles.len() as u64).saturating_sub(inserted + updated + deleted),
        })
    }

    /// The pool this store writes through.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl UserStore for PgUserStore {
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
            let profiles = super::newest_per_user(profiles);
            let mut counts = ImportCounts::default();
            if profiles.is_empty() {
                return Ok(counts);
            }
            // One transaction per batch, one statement per chunk of at most
            // IMPORT_STATEMENT_BYTES of parameters (see there why).
            let mut tx = self.pool.begin().await?;
            for chunk in statement_chunks(&profiles) {
                counts += self.import_chunk(&mut tx, chunk).await?;
            }
            tx.commit().await?;
            Ok(counts)
        })
    }

    fn prune_webhook_deliveries(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let done = sqlx::query(
                "DELETE FROM clerk_webhook_events \
                 WHERE received_at < now() - make_interval(secs => $1)",
            )
            .persistent(false)
            .bind(older_than.as_secs_f64())
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>> {
        Some(Arc::new(PgChannel::new(self.pool.clone())))
    }

    /// The `organizations` and `organization_memberships` tables created by [`migrate`]
    /// (also beside a custom users table: memberships hold the user id without a foreign key).
    fn organizations(&self) -> Option<&dyn OrganizationStore> {
        Some(&self.organizations)
    }
}
