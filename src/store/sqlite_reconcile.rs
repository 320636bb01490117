//! The SQLite [`ReconcileSession`]: a temporary table on one pooled connection.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Row, Sqlite};

use super::reconcile::{
    Dialect, DiffSql, EXAMPLES, ImportRow, Kind, ReconcileSession, Snapshot, candidate_keys,
    import_row, temp_columns,
};
use super::sqlite_orgs::{reconcile_membership_deletes, reconcile_organization_deletes};
use super::{StoreError, StoreFuture};
use crate::time::unix_now_ms;

/// Most parameters per `INSERT` (SQLite allows 32,766).
const PARAMETERS_PER_INSERT: usize = 4000;

pub(super) struct SqliteReconcile {
    conn: PoolConnection<Sqlite>,
    sql: Arc<DiffSql>,
    /// The deletion's statements; each binds the keys, then the version and now (both now).
    deletes: Vec<String>,
    /// When the walk began, Unix ms (the clock the store writes `created_at` with).
    started_ms: i64,
}

impl SqliteReconcile {
    /// A session of `kind`; `delete_users` is the store's `user.deleted` statement.
    pub(super) async fn open(
        pool: &sqlx::SqlitePool,
        kind: Kind,
        delete_users: &str,
    ) -> Result<Self, StoreError> {
        let (table, deletes) = match kind {
            Kind::Users => (
                "users",
                vec![format!("{delete_users} WHERE u.deleted_at IS NULL")],
            ),
            Kind::Organizations => ("organizations", reconcile_organization_deletes()),
            Kind::Memberships => ("organization_memberships", reconcile_membership_deletes()),
        };
        let mut conn = pool.acquire().await?;
        let temp = kind.temp_table();
        let columns = temp_columns(kind, "TEXT", "INTEGER", "INTEGER");
        for statement in [
            format!("DROP TABLE IF EXISTS temp.{temp}"),
            format!("CREATE TEMPORARY TABLE {temp} ({columns})"),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await?;
        }
        let dialect = Dialect {
            distinct: "IS NOT",
            before: |alias: &str, start: &str| format!("{alias}.created_at < {start}"),
            param: |n| format!("?{n}"),
        };
        Ok(Self {
            conn,
            sql: Arc::new(DiffSql::new(kind, table, &dialect)),
            deletes,
            started_ms: unix_now_ms(),
        })
    }
}

impl ReconcileSession for SqliteReconcile {
    fn add<'a>(&'a mut self, snapshots: &'a [Snapshot]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let kind = self.sql.kind;
            // The keys, the fields, the version twice (as given, and as `clerk_updated_at`).
            let width = kind.keys().len() + kind.fields().len() + 1;
            for chunk in snapshots.chunks(PARAMETERS_PER_INSERT / width) {
                let rows = (0..chunk.len())
                    .map(|row| {
                        let at = row * width;
                        let values = (at + 1..=at + width)
                            .chain(std::iter::once(at + width))
                            .map(|n| format!("?{n}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!("({values})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let statement =
                    format!("INSERT OR IGNORE INTO {} VALUES {rows}", kind.temp_table());
                let mut query = sqlx::query(AssertSqlSafe(statement));
                for snapshot in chunk {
                    for key in &snapshot.keys {
                        query = query.bind(key);
                    }
                    for field in &snapshot.fields {
                        query = query.bind(field);
                    }
                    query = query.bind(snapshot.version_ms);
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
            let statement = format!("ANALYZE temp.{}", self.sql.kind.temp_table());
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }

    fn counts<'a>(&'a mut self, select: &'a str) -> StoreFuture<'a, Vec<u64>> {
        Box::pin(async move {
            let row = sqlx::query(AssertSqlSafe(select))
                .bind(self.started_ms)
                .fetch_one(&mut *self.conn)
                .await?;
            (0..row.len())
                .map(|at| Ok(u64::try_from(row.try_get::<i64, _>(at)?).unwrap_or(0)))
                .collect()
        })
    }

    fn examples<'a>(
        &'a mut self,
        from: &'a str,
        id: &'a str,
        bind_start: bool,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let query = format!("SELECT {id} {from} ORDER BY 1 LIMIT {EXAMPLES}");
            let query = sqlx::query_scalar::<_, String>(AssertSqlSafe(query));
            let query = if bind_start {
                query.bind(self.started_ms)
            } else {
                query
            };
            Ok(query.fetch_all(&mut *self.conn).await?)
        })
    }

    fn to_import<'a>(
        &'a mut self,
        after: &'a [String],
        limit: i64,
    ) -> StoreFuture<'a, Vec<ImportRow>> {
        Box::pin(async move {
            let mut query = sqlx::query(AssertSqlSafe(self.sql.to_import.clone()));
            for key in after {
                query = query.bind(key);
            }
            let rows = query.bind(limit).fetch_all(&mut *self.conn).await?;
            let kind = self.sql.kind;
            Ok(rows
                .iter()
                .map(|row| import_row(kind, row))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn deletion_candidates<'a>(
        &'a mut self,
        after: &'a [String],
        limit: i64,
    ) -> StoreFuture<'a, Vec<Vec<String>>> {
        Box::pin(async move {
            let mut query =
                sqlx::query(AssertSqlSafe(self.sql.candidates.clone())).bind(self.started_ms);
            for key in after {
                query = query.bind(key);
            }
            let rows = query.bind(limit).fetch_all(&mut *self.conn).await?;
            let kind = self.sql.kind;
            Ok(rows
                .iter()
                .map(|row| candidate_keys(kind, row))
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn delete<'a>(&'a mut self, keys: &'a [String]) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // The kind's deletion statements, the first only where the row is still live:
            // the rest run when it deleted one. The first is a write, so the transaction takes
            // the write lock at once.
            let now = unix_now_ms();
            let mut tx = sqlx::Connection::begin(&mut *self.conn).await?;
            let mut deleted = false;
            for (at, statement) in self.deletes.iter().enumerate() {
                let mut query = sqlx::query(AssertSqlSafe(statement.as_str()));
                for key in keys {
                    query = query.bind(key);
                }
                let done = query.bind(now).bind(now).execute(&mut *tx).await?;
                if at == 0 {
                    deleted = done.rows_affected() == 1;
                    if !deleted {
                        break;
                    }
                }
            }
            tx.commit().await?;
            Ok(deleted)
        })
    }

    fn finish(&mut self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let statement = format!("DROP TABLE IF EXISTS temp.{}", self.sql.kind.temp_table());
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }
}
