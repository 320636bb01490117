//! The PostgreSQL [`ReconcileSession`]: a temporary table on one pooled connection.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Postgres};

use super::postgres::{PgUserStore, statement_chunks};
use super::reconcile::{
    DiffSql, EXAMPLES, ImportRow, ReconcileSession, TEMP_TABLE, profile_from_row,
};
use super::{StoreError, StoreFuture, UserProfile};

impl PgUserStore {
    /// A reconcile session on one connection of the store's pool.
    pub(crate) async fn reconcile_session(&self) -> Result<Box<dyn ReconcileSession>, StoreError> {
        let session = PgReconcile::open(&self.pool, &self.table, self.delete_sql.clone()).await?;
        Ok(Box::new(session))
    }
}

struct PgReconcile {
    conn: PoolConnection<Postgres>,
    sql: Arc<DiffSql>,
    delete_sql: Arc<str>,
    /// When the walk began, Unix ms on the database's clock.
    started_ms: i64,
}

impl PgReconcile {
    /// Takes a connection for the whole reconcile and (re)creates the temporary table.
    async fn open(
        pool: &sqlx::PgPool,
        table: &str,
        delete_sql: Arc<str>,
    ) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        for statement in [
            format!("DROP TABLE IF EXISTS {TEMP_TABLE}"),
            format!(
                "CREATE TEMPORARY TABLE {TEMP_TABLE} (id text PRIMARY KEY, email text, \
                 first_name text, last_name text, username text, image_url text, \
                 version_ms bigint, clerk_updated_at timestamptz)"
            ),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .persistent(false)
                .execute(&mut *conn)
                .await?;
        }
        let started_ms: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM now()) * 1000)::bigint")
                .persistent(false)
                .fetch_one(&mut *conn)
                .await?;
        let sql = DiffSql::new(
            table,
            "IS DISTINCT FROM",
            |start| format!("u.created_at < to_timestamp({start}::bigint / 1000.0)"),
            |n| format!("${n}"),
        );
        Ok(Self {
            conn,
            sql: Arc::new(sql),
            delete_sql,
            started_ms,
        })
    }

    async fn add_chunk(&mut self, profiles: &[UserProfile]) -> Result<(), sqlx::Error> {
        let column = |field: fn(&UserProfile) -> &Option<String>| -> Vec<Option<&str>> {
            profiles.iter().map(|p| field(p).as_deref()).collect()
        };
        let statement = format!(
            "INSERT INTO {TEMP_TABLE} \
             SELECT id, email, first_name, last_name, username, image_url, version_ms, \
                    to_timestamp(version_ms / 1000.0) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::bigint[]) \
                 AS t(id, email, first_name, last_name, username, image_url, version_ms) \
             ON CONFLICT (id) DO NOTHING"
        );
        sqlx::query(AssertSqlSafe(statement))
            .persistent(false)
            .bind(profiles.iter().map(|p| p.id.as_str()).collect::<Vec<_>>())
            .bind(column(|p| &p.email))
            .bind(column(|p| &p.first_name))
            .bind(column(|p| &p.last_name))
            .bind(column(|p| &p.username))
            .bind(column(|p| &p.image_url))
            .bind(profiles.iter().map(|p| p.version_ms).collect::<Vec<_>>())
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

impl ReconcileSession for PgReconcile {
    fn add<'a>(&'a mut self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Statements under the socket's send buffer, as the import's.
            for chunk in statement_chunks(profiles) {
                self.add_chunk(chunk).await?;
            }
            Ok(())
        })
    }

    fn sql(&self) -> Arc<DiffSql> {
        self.sql.clone()
    }

    fn prepare(&mut self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Autovacuum never analyzes temporary tables: without statistics the planner
            // takes the table for empty and joins it row by row.
            sqlx::query(AssertSqlSafe(format!("ANALYZE {TEMP_TABLE}")))
                .persistent(false)
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }

    fn count<'a>(&'a mut self, from: &'a str, bind_start: bool) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let query = format!("SELECT count(*) {from}");
            let query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(query)).persistent(false);
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
            let query = sqlx::query_scalar::<_, String>(AssertSqlSafe(query)).persistent(false);
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
                .persistent(false)
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
                    .persistent(false)
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
            let done = sqlx::query(AssertSqlSafe(statement))
                .persistent(false)
                .bind(id)
                .bind(crate::time::unix_now_ms())
                .execute(&mut *self.conn)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn finish(&mut self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {TEMP_TABLE}")))
                .persistent(false)
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }
}
