//! What [`crate::reconcile()`] needs from a SQL store: a session on one connection that holds
//! Clerk's user list in a temporary table, and the SQL that compares it with the users table.
//!
//! Clerk's snapshots go into `clerk_sync_reconcile` (aliased `excluded`, the name the shared
//! versioned-field SQL uses for a snapshot) and the users table is `u`, so "stale" is exactly
//! the condition under which an import would change the row ([`sql::import_update_condition`]).

use super::sql;
use super::{StoreFuture, UserProfile};

/// Ids of each class shown as examples.
pub(crate) const EXAMPLES: i64 = 10;

/// The temporary table of Clerk's snapshots.
pub(crate) const TEMP_TABLE: &str = "clerk_sync_reconcile";

/// Counts (and example ids) of a comparison.
#[derive(Debug, Clone, Default)]
pub(crate) struct Diff {
    pub(crate) clerk_users: u64,
    pub(crate) missing: u64,
    pub(crate) deleted_in_clerk: u64,
    pub(crate) stale: u64,
    /// Live rows that Clerk lists (in sync + stale).
    pub(crate) listed_live: u64,
    /// Rows deleted here that Clerk still lists.
    pub(crate) deleted_here: u64,
    /// Every row of the users table, deleted ones included.
    pub(crate) table_rows: u64,
    pub(crate) missing_examples: Vec<String>,
    pub(crate) deleted_in_clerk_examples: Vec<String>,
    pub(crate) stale_examples: Vec<String>,
    pub(crate) deleted_here_examples: Vec<String>,
}

/// One reconcile's connection and temporary table.
pub(crate) trait ReconcileSession: Send {
    /// Adds Clerk's snapshots (a page) to the temporary table; a repeated id keeps its first.
    fn add<'a>(&'a mut self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ()>;

    /// The comparison's SQL of this dialect.
    fn sql(&self) -> std::sync::Arc<DiffSql>;

    /// Readies the temporary table for the comparison (statistics), once it is filled.
    fn prepare(&mut self) -> StoreFuture<'_, ()>;

    /// `SELECT count(*) <from>`, with the walk's start bound first when `bind_start`.
    fn count<'a>(&'a mut self, from: &'a str, bind_start: bool) -> StoreFuture<'a, u64>;

    /// `SELECT <id> <from>`, the first [`EXAMPLES`] by id.
    fn examples<'a>(
        &'a mut self,
        from: &'a str,
        id: &'a str,
        bind_start: bool,
    ) -> StoreFuture<'a, Vec<String>>;

    /// The next `limit` of Clerk's snapshots with ids after `after`, by id, each with
    /// whether its row exists and whether it is missing or stale (to import).
    fn to_import<'a>(&'a mut self, after: &'a str, limit: i64) -> StoreFuture<'a, Vec<ImportRow>>;

    /// Up to `limit` ids after `after` of live rows that existed before the walk began and
    /// that Clerk did not list, by id.
    fn deletion_candidates<'a>(
        &'a mut self,
        after: &'a str,
        limit: i64,
    ) -> StoreFuture<'a, Vec<String>>;

    /// Soft-deletes the live row `id` as `user.deleted` does (personal fields cleared,
    /// `deleted_at` set, never resurrected); whether a live row was deleted.
    fn delete<'a>(&'a mut self, id: &'a str) -> StoreFuture<'a, bool>;

    /// Drops the temporary table.
    fn finish(&mut self) -> StoreFuture<'_, ()>;
}

/// Compares the table with what was added to the session.
pub(crate) async fn diff(session: &mut dyn ReconcileSession) -> Result<Diff, super::StoreError> {
    session.prepare().await?;
    let sql = session.sql();
    let mut diff = Diff {
        clerk_users: session.count(&format!("FROM {TEMP_TABLE}"), false).await?,
        missing: session.count(&sql.missing, false).await?,
        deleted_in_clerk: session.count(&sql.deleted_in_clerk, true).await?,
        stale: session.count(&sql.stale, false).await?,
        listed_live: session.count(&sql.listed_live, false).await?,
        deleted_here: session.count(&sql.deleted_here, false).await?,
        table_rows: session.count(&sql.table_rows, false).await?,
        ..Diff::default()
    };
    diff.missing_examples = session.examples(&sql.missing, "excluded.id", false).await?;
    diff.deleted_in_clerk_examples = session
        .examples(&sql.deleted_in_clerk, "u.id", true)
        .await?;
    diff.stale_examples = session.examples(&sql.stale, "u.id", false).await?;
    diff.deleted_here_examples = session.examples(&sql.deleted_here, "u.id", false).await?;
    Ok(diff)
}

/// The comparison's SQL for one dialect.
pub(crate) struct DiffSql {
    pub(crate) table_rows: String,
    pub(crate) missing: String,
    /// Binds the walk's start (Unix ms) as the first parameter.
    pub(crate) deleted_in_clerk: String,
    pub(crate) stale: String,
    pub(crate) listed_live: String,
    pub(crate) deleted_here: String,
    /// Binds the id to start after, then the page size.
    pub(crate) to_import: String,
    /// Binds the walk's start, the id to start after, then the page size.
    pub(crate) candidates: String,
}

impl DiffSql {
    /// `table` is the users table; `distinct` the dialect's null-safe "differs"; `before(p)`
    /// the condition "`u` was created before the walk began" with the start as parameter
    /// `p`; `param(n)` the dialect's n-th parameter.
    pub(crate) fn new(
        table: &str,
        distinct: &str,
        before: impl Fn(&str) -> String,
        param: impl Fn(usize) -> String,
    ) -> Self {
        let changes = sql::import_update_condition(&sql::PROFILE_COLUMNS, distinct);
        let unlisted = format!(
            "u.deleted_at IS NULL AND {} AND NOT EXISTS \
             (SELECT 1 FROM {TEMP_TABLE} excluded WHERE excluded.id = u.id)",
            before(&param(1))
        );
        let joined = format!("{TEMP_TABLE} excluded JOIN {table} u ON u.id = excluded.id");
        Self {
            table_rows: format!("FROM {table}"),
            missing: format!(
                "FROM {TEMP_TABLE} excluded \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} u WHERE u.id = excluded.id)"
            ),
            deleted_in_clerk: format!("FROM {table} u WHERE {unlisted}"),
            stale: format!("FROM {joined} WHERE {changes}"),
            listed_live: format!("FROM {joined} WHERE u.deleted_at IS NULL"),
            deleted_here: format!("FROM {joined} WHERE u.deleted_at IS NOT NULL"),
            // The keyset chunk first (an index range of the temporary table), then each
            // row's join: a filter before the LIMIT makes the planner join both tables whole.
            to_import: format!(
                "WITH chunk AS (SELECT * FROM {TEMP_TABLE} WHERE id > {} ORDER BY id LIMIT {}) \
                 SELECT excluded.id, excluded.email, excluded.first_name, excluded.last_name, \
                        excluded.username, excluded.image_url, excluded.version_ms, \
                        u.id IS NOT NULL AS existing, \
                        COALESCE(u.id IS NULL OR ({changes}), false) AS needed \
                 FROM chunk excluded LEFT JOIN {table} u ON u.id = excluded.id \
                 ORDER BY excluded.id",
                param(1),
                param(2)
            ),
            candidates: format!(
                "SELECT u.id FROM {table} u WHERE u.id > {} AND {unlisted} \
                 ORDER BY u.id LIMIT {}",
                param(2),
                param(3)
            ),
        }
    }
}

/// A row of [`DiffSql::to_import`].
pub(crate) struct ImportRow {
    pub(crate) profile: UserProfile,
    /// The users table has a row for it.
    pub(crate) existing: bool,
    /// Missing or stale: an import would change the table.
    pub(crate) needed: bool,
}

/// A row of [`DiffSql::to_import`].
pub(crate) fn profile_from_row<R>(row: &R) -> Result<ImportRow, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut profile = UserProfile::new(row.try_get::<String, _>(0)?);
    profile.email = row.try_get(1)?;
    profile.first_name = row.try_get(2)?;
    profile.last_name = row.try_get(3)?;
    profile.username = row.try_get(4)?;
    profile.image_url = row.try_get(5)?;
    profile.version_ms = row.try_get(6)?;
    Ok(ImportRow {
        profile,
        existing: row.try_get(7)?,
        needed: row.try_get(8)?,
    })
}
