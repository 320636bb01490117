//! Sync + tier-aware rate limiting on `GET /me`.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test RATE_LIMITS='free=3/m,pro=600/m' \
//!     cargo run --example rate_limited_api
//! ```
//!
//! Reads the quickstart's variables plus:
//! - `RATE_LIMITS`: comma-separated `tier=<count>/<s|m|h|d>` or `tier=unlimited`; `*` sets the
//!   limit of tiers not listed (unlimited when absent). Default `free=60/m,pro=600/m`.
//! - `RATE_LIMIT_STORE`: `memory` (default, one process), `redis` (one limit shared by every
//!   process, in the Redis at `REDIS_URL`, default `redis://127.0.0.1:6379`) or `postgres`
//!   (shared, in the `clerk_rate_limits` table).

mod common;

use clerk_sync::{PgRateLimitStore, RateLimitLayer, RedisRateLimitStore, TierLimits};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let demo = common::demo(None).await?;
    let limits: TierLimits = std::env::var("RATE_LIMITS")
        .unwrap_or_else(|_| "free=60/m,pro=600/m".into())
        .parse()?;
    let limiter = match (std::env::var("RATE_LIMIT_STORE").as_deref(), &demo.database) {
        (Ok("postgres"), common::Database::Postgres(pool)) => {
            let store = PgRateLimitStore::new(pool.clone());
            // Expired rows are deleted by a task the app runs, not by one spawned for it.
            tokio::spawn(store.cleanup());
            RateLimitLayer::with_store(limits, store)
        }
        (Ok("postgres"), common::Database::Sqlite(_)) => {
            return Err("RATE_LIMIT_STORE=postgres needs a postgres:// DATABASE_URL".into());
        }
        (Ok("redis"), _) => {
            let store = RedisRateLimitStore::new(&common::redis_url())?;
            // Optional: fail here rather than with the first request when Redis is down.
            store.ping().await?;
            println!("rate limits: Redis at REDIS_URL");
            RateLimitLayer::with_store(limits, store)
        }
        (Ok("memory") | Err(_), _) => RateLimitLayer::per_tier(limits),
        (Ok(other), _) => {
            return Err(
                format!("RATE_LIMIT_STORE: `{other}` is not memory, redis or postgres").into(),
            );
        }
    };
    demo.serve(demo.app_with_limiter(Some(limiter)), |_| {})
        .await
}
