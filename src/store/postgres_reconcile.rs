//! The PostgreSQL [`ReconcileSession`]: a temporary table on one pooled connection.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Postgres, Row};

use super::postgres::{PgUserStore, statement_chunks};
use super::postgres_orgs::{reconcile_membership_deletes, reconcile_organization_deletes};
use super::reconcile::{
    Dialect, DiffSql, EXAMPLES, ImportRow, Kind, ReconcileSession, Snapshot, candidate_keys,
    import_row, temp_columns,
};
use super::{StoreError, StoreFuture};

impl PgUserStore {
    /// A reconcile session of `kind` on one connection of the store's pool.
    pub(crate) async fn reconcile_session(
        &self,
        kind: Kind,
    ) -> Result<Box<dyn ReconcileSession>, StoreError> {
        let (table, deletes) = match kind {
            Kind::Users => (
                &*self.table,
                vec![format!("{} WHERE u.deleted_at IS NULL", self.delete_sql)],
            ),
            Kind::Organizations => ("organizations", reconcile_organization_deletes()),
            Kind::Memberships => ("organization_memberships", reconcile_membership_deletes()),
        };
        let session = PgReconcile::open(&self.pool, kind, table, deletes).await?;
        Ok(Box::new(session))
    }
}

struct PgReconcile {
    conn: PoolConnection<Postgres>,
    sql: Arc<DiffSql>,
    /// The deletion's statements; each binds the keys, then the version (now, ms).
    deletes: Vec<String>,
    /// When the walk began, Unix ms on the database's clock.
    started_ms: i64,
}

impl PgReconcile {
    /// Takes a connection for the whole reconcile and (re)creates the temporary table.
    async fn open(
        pool: &sqlx::PgPool,
        kind: Kind,
        table: &str,
        deletes: Vec<String>,
    ) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        let temp = kind.temp_table();
        let columns = temp_columns(kind, "text", "bigint", "timestamptz");
        for statement in [
            format!("DROP TABLE IF EXISTS {temp}"),
            format!("CREATE TEMPORARY TABLE {temp} ({columns})"),
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
        let dialect = Dialect {
            distinct: "IS DISTINCT FROM",
            before: |alias: &str, start: &str| {
                format!("{alias}.created_at < to_timestamp({start}::bigint / 1000.0)")
            },
            param: |n| format!("${n}"),
        };
        Ok(Self {
            conn,
            sql: Arc::new(DiffSql::new(kind, table, &dialect)),
            deletes,
            started_ms,
        })
    }

    /// One `INSERT … SELECT FROM UNNEST` of a chunk: an array per column.
    async fn add_chunk(&mut self, snapshots: &[Snapshot]) -> Result<(), sqlx::Error> {
        let kind = self.sql.kind;
        let (k, f) = (kind.keys().len(), kind.fields().len());
        let arrays = (1..=k + f)
            .map(|n| format!("${n}::text[]"))
            .chain(std::iter::once(format!("${}::bigint[]", k + f + 1)))
            .collect::<Vec<_>>()
            .join(", ");
        let names = kind
            .keys()
            .iter()
            .chain(kind.fields())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let statement = format!(
            "INSERT INTO {temp} \
             SELECT {names}, version_ms, to_timestamp(version_ms / 1000.0) \
             FROM UNNEST({arrays}) AS t({names}, version_ms) \
             ON CONFLICT DO NOTHING",
            temp = kind.temp_table()
        );
        // Prepared once per connection (a reconcile needs a direct connection anyway, for
        // its temporary table): the walk runs this statement a thousand times per 100k.
        let mut query = sqlx::query(AssertSqlSafe(statement));
        for at in 0..k {
            query = query.bind(
                snapshots
                    .iter()
                    .map(|s| s.keys[at].as_str())
                    .collect::<Vec<_>>(),
            );
        }
        for at in 0..f {
            query = query.bind(
                snapshots
                    .iter()
                    .map(|s| s.fields[at].as_deref())
                    .collect::<Vec<_>>(),
            );
        }
        query
            .bind(snapshots.iter().map(|s| s.version_ms).collect::<Vec<_>>())
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

impl ReconcileSession for PgReconcile {
    fn add<'a>(&'a mut self, snapshots: &'a [Snapshot]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // Statements under the socket's send buffer, as the import's.
            for chunk in statement_chunks(snapshots) {
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
            // takes the table for empty and joins it row by row. The row count and the keys'
            // statistics are what the joins need (the text columns' would double the time).
            let kind = self.sql.kind;
            let statement = format!("ANALYZE {} ({})", kind.temp_table(), kind.keys().join(", "));
            sqlx::query(AssertSqlSafe(statement))
                .persistent(false)
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }

    fn counts<'a>(&'a mut self, select: &'a str) -> StoreFuture<'a, Vec<u64>> {
        Box::pin(async move {
            let row = sqlx::query(AssertSqlSafe(select))
                .persistent(false)
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
            let query = sqlx::query_scalar::<_, String>(AssertSqlSafe(query)).persistent(false);
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
            let mut query =
                sqlx::query(AssertSqlSafe(self.sql.to_import.clone())).persistent(false);
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
            let mut query = sqlx::query(AssertSqlSafe(self.sql.candidates.clone()))
                .persistent(false)
                .bind(self.started_ms);
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
            // the rest run when it deleted one.
            let now = crate::time::unix_now_ms();
            let mut tx = sqlx::Connection::begin(&mut *self.conn).await?;
            let mut deleted = false;
            for (at, statement) in self.deletes.iter().enumerate() {
                let mut query = sqlx::query(AssertSqlSafe(statement.as_str())).persistent(false);
                for key in keys {
                    query = query.bind(key);
                }
                let done = query.bind(now).execute(&mut *tx).await?;
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
            let statement = format!("DROP TABLE IF EXISTS {}", self.sql.kind.temp_table());
            sqlx::query(AssertSqlSafe(statement))
                .persistent(false)
                .execute(&mut *self.conn)
                .await?;
            Ok(())
        })
    }
}
