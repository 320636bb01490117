//! The SQLite [`ReconcileSession`]: a temporary table on one pooled connection.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Sqlite};

use super::reconcile::{
    DiffSql, EXAMPLES, ImportRow, ReconcileSession, TEMP_TABLE, profile_from_row,
};
use super::{StoreError, StoreFuture, UserProfile};
use crate::time::unix_now_ms;

/// Rows per `INSERT` (8 parameters each, well under SQLite's 32,766).
const ROWS_PER_INSERT: usize = 500;

pub(super) struct SqliteReconcile {
    conn: PoolConnection<Sqlite>,
    sql: Arc<DiffSql>,
    delete_sql: Arc<str>,
    /// When the walk began, Unix ms (the clock the store writes `created_at` with).
    started_ms: i64,
}

impl SqliteReconcile {
    pub(super) async fn open(
        pool: &sqlx::SqlitePool,
        delete_sql: Arc<str>,
    ) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        for statement in [
            format!("DROP TABLE IF EXISTS temp.{TEMP_TABLE}"),
            format!(
                "CREATE TEMPORARY TABLE {TEMP_TABLE} (id TEXT PRIMARY KEY NOT NULL, email TEXT, \
                 first_name TEXT, last_name TEXT, username TEXT, image_url TEXT, \
                 version_ms INTEGER, clerk_updated_at INTEGER)"
            ),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await?;
        }
        let sql = DiffSql::new(
            "users",
            "IS NOT",
            |start| format!("u.created_at < {start}"),
            |n| format!("?{n}"),
        );
        Ok(Self {
            conn,
            sql: Arc::new(sql),
            delete_sql,
            started_ms: unix_now_ms(),
        })
    }
}

impl ReconcileSession for SqliteReconcile {
    fn add<'a>(&'a mut self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            for chunk in profiles.chunks(ROWS_PER_INSERT) {
                let rows = (0..chunk.len())
                    .map(|row| {
                        let at = row * 7;
                        format!(
                            "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                            at + 1,
                            at + 2,
                            at + 3,
                            at + 4,
                            at + 5,
                            at + 6,
                            at + 7,
                            at + 7
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let statement = format!("INSERT OR IGNORE INTO {TEMP_TABLE} VALUES {rows}");
                let mut query = sqlx::query(AssertSqlSafe(statement));
                for profile in chunk {
                    query = super::sql::bind_profile(query, profile);
                }
                query.execute(&mut *self.conn).await?;
            }
            Ok(())
        })
    }

    fn sql(&self) -> Arc<DiffSql> {
        self.sql.clone()
    }

    fn prepare(&mut self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(format!("ANALYZE temp.{TEMP_TABLE}")))
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }

    fn count<'a>(&'a mut self, from: &'a str, bind_start: bool) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let query = format!("SELECT count(*) {from}");
            let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(query));
            let query = if bind_start {
                query.bind(self.started_ms)
            } else {
                query
            };
            Ok(u64::try_from(query.fetch_one(&mut *self.conn).await?).unwrap_or(0))
        })
    }

    fn examples<'a>(
        &'a mut self,
        from: &'a str,
        id: &'a str,
        bind_start: bool,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let query = format!("SELECT {id} {from} ORDER BY {id} LIMIT {EXAMPLES}");
            let query = sqlx::query_scalar::<_, String>(AssertSqlSafe(query));
            let query = if bind_start {
                query.bind(self.started_ms)
            } else {
                query
            };
            Ok(query.fetch_all(&mut *self.conn).await?)
        })
    }

    fn to_import<'a>(&'a mut self, after: &'a str, limit: i64) -> StoreFuture<'a, Vec<ImportRow>> {
        Box::pin(async move {
            let rows = sqlx::query(AssertSqlSafe(self.sql.to_import.clone()))
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *self.conn)
                .await?;
            Ok(rows
                .iter()
                .map(profile_from_row)
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn deletion_candidates<'a>(
        &'a mut self,
        after: &'a str,
        limit: i64,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            Ok(
                sqlx::query_scalar(AssertSqlSafe(self.sql.candidates.clone()))
                    .bind(self.started_ms)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&mut *self.conn)
                    .await?,
            )
        })
    }

    fn delete<'a>(&'a mut self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // The store's `user.deleted` statement, only where the row is still live.
            let statement = format!("{} WHERE u.deleted_at IS NULL", self.delete_sql);
            let now = unix_now_ms();
            let done = sqlx::query(AssertSqlSafe(statement))
                .bind(id)
                .bind(now)
                .bind(now)
                .execute(&mut *self.conn)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn finish(&mut self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS temp.{TEMP_TABLE}"
            )))
            .execute(&mut *self.conn)
            .await?;
            Ok(())
        })
    }
}
