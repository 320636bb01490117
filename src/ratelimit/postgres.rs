//! [`PgRateLimitStore`]: one limit shared by every process, one statement per request.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{PgPool, Row};

use super::limits::Limit;
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::sync::StoreFuture;

// GCRA in one statement. Every SET expression reads the old row, so `allowed` is decided and
// `tat` moved (or not) atomically under the row lock; concurrent requests for one key
// serialise on it. $2 is the emission interval and $3 the burst tolerance, in seconds.
macro_rules! gcra_sql {
    ($table:literal, $key:literal, $value:literal) => {
        concat!(
            "INSERT INTO ",
            $table,
            " AS r (",
            $key,
            ", tat, allowed) \
             VALUES (",
            $value,
            ", now() + make_interval(secs => $2), true) \
             ON CONFLICT (",
            $key,
            ") DO UPDATE SET \
                 allowed = GREATEST(r.tat, now()) - now() <= make_interval(secs => $3), \
                 tat = CASE WHEN GREATEST(r.tat, now()) - now() <= make_interval(secs => $3) \
                            THEN GREATEST(r.tat, now()) + make_interval(secs => $2) \
                            ELSE r.tat END \
             RETURNING allowed, extract(epoch FROM tat - now())::float8 AS ahead"
        )
    };
}

const USER_SQL: &str = gcra_sql!("clerk_rate_limits", "user_id", "$1");
const IP_SQL: &str = gcra_sql!("clerk_rate_limits_ip", "ip", "$1::inet");

/// Rate-limit state in PostgreSQL (tables `clerk_rate_limits` and `clerk_rate_limits_ip`,
/// created by [`crate::migrate`]), so every process shares one limit per user.
///
/// Each request is one atomic statement (GCRA, the same arithmetic as
/// [`crate::MemoryRateLimitStore`]), so concurrent requests from many processes never admit
/// more than the limit. `clerk_rate_limits.user_id` references `users(id)`: a limited request
/// for a user without a row fails, which makes "the limiter runs after sync" a database
/// guarantee. Expired rows are deleted every 10 minutes by a background task that ends with
/// the last clone of the store.
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
    /// A store on `pool`; call inside a Tokio runtime to get the cleanup task.
    pub fn new(pool: PgPool) -> Self {
        let inner = Arc::new(pool);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(cleanup(Arc::downgrade(&inner)));
        }
        Self { inner }
    }
}

async fn cleanup(pool: Weak<PgPool>) {
    loop {
        tokio::time::sleep(CLEANUP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        for sql in [
            "DELETE FROM clerk_rate_limits WHERE tat < now()",
            "DELETE FROM clerk_rate_limits_ip WHERE tat < now()",
        ] {
            if let Err(error) = sqlx::query(sql).persistent(false).execute(&*pool).await {
                tracing::warn!(%error, "rate-limit cleanup failed");
            }
        }
    }
}

impl RateLimitStore for PgRateLimitStore {
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision> {
        Box::pin(async move {
            let (sql, value) = match key {
                RateLimitKey::User(id) => (USER_SQL, id.to_owned()),
                RateLimitKey::Ip(ip) => (IP_SQL, ip.to_string()),
            };
            let interval = limit.emission_interval();
            let tolerance = limit.period().saturating_sub(interval);
            let row = sqlx::query(sql)
                .bind(value)
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
