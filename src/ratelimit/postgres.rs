//! [`PgRateLimitStore`]: one limit shared by every process, one statement per request.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{PgPool, Row};

use super::limits::Limit;
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::error::{StoreError, StoreFuture};

// GCRA in one statement. Every SET expression reads the old row, so `allowed` is decided and
// `tat` moved (or not) atomically under the row lock; concurrent requests for one key
// serialise on it. $1 is the namespaced key, $2 the emission interval and $3 the burst
// tolerance, in seconds.
const GCRA_SQL: &str = "INSERT INTO clerk_rate_limits AS r (key, tat, allowed) \
     VALUES ($1, now() + make_interval(secs => $2), true) \
     ON CONFLICT (key) DO UPDATE SET \
         allowed = GREATEST(r.tat, now()) - now() <= make_interval(secs => $3), \
         tat = CASE WHEN GREATEST(r.tat, now()) - now() <= make_interval(secs => $3) \
                    THEN GREATEST(r.tat, now()) + make_interval(secs => $2) \
                    ELSE r.tat END \
     RETURNING allowed, extract(epoch FROM tat - now())::float8 AS ahead";

/// Rate-limit state in PostgreSQL (table `clerk_rate_limits`, created by [`crate::migrate`]),
/// so every process shares one limit per key.
///
/// Each request is one atomic statement (GCRA, the same arithmetic as
/// [`crate::MemoryRateLimitStore`]), so concurrent requests from many processes never admit
/// more than the limit. Rows are keyed by [`RateLimitKey::storage_key`] (`user:<id>`,
/// `ip:<network>`), with no foreign key to the users table, so the store works with any
/// table given to [`crate::PgUserStore::with_table`]. Expired rows are deleted (through an
/// index on `tat`) by the [`cleanup`](Self::cleanup) task, which the app spawns.
#[derive(Clone)]
pub struct PgRateLimitStore {
    inner: Arc<PgPool>,
}

impl std::fmt::Debug for PgRateLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRateLimitStore").finish_non_exhaustive()
    }
}

const CLEANUP_EVERY: Duration = Duration::from_secs(600);

impl PgRateLimitStore {
    /// A store on `pool`. Nothing is spawned: see [`cleanup`](Self::cleanup).
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: Arc::new(pool),
        }
    }

    /// Deletes expired rows every 10 minutes, as a future for the app to spawn once:
    /// `tokio::spawn(store.cleanup())`. It ends by itself when the last clone of the store is
    /// gone. Without it the table keeps one row per key ever seen (stale rows never change a
    /// decision; they only take space).
    pub fn cleanup(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        cleanup(Arc::downgrade(&self.inner))
    }

    /// Deletes the rows whose budget is full again; the number deleted.
    pub async fn delete_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM clerk_rate_limits WHERE tat < now()")
            .persistent(false)
            .execute(&*self.inner)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn cleanup(pool: Weak<PgPool>) {
    loop {
        tokio::time::sleep(CLEANUP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        if let Err(error) = sqlx::query("DELETE FROM clerk_rate_limits WHERE tat < now()")
            .persistent(false)
            .execute(&*pool)
            .await
        {
            tracing::warn!(%error, "rate-limit cleanup failed");
        }
    }
}

impl RateLimitStore for PgRateLimitStore {
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision> {
        Box::pin(async move {
            let interval = limit.emission_interval();
            let tolerance = limit.period().saturating_sub(interval);
            let row = sqlx::query(GCRA_SQL)
                .bind(key.storage_key())
                .bind(interval.as_secs_f64())
                .bind(tolerance.as_secs_f64())
                .fetch_one(&*self.inner)
                .await?;
            let allowed: bool = row.try_get("allowed")?;
            let ahead: f64 = row.try_get("ahead")?;
            let ahead = Duration::try_from_secs_f64(ahead.max(0.0)).unwrap_or(limit.period());
            Ok(Decision::from_gcra(allowed, ahead, limit))
        })
    }
}
