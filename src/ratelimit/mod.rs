//! Tier-aware rate limiting that runs after the sync layer: [`RateLimitLayer`], [`TierLimits`],
//! and the memory, Postgres and Redis stores.

#[cfg(feature = "redis")]
mod denied;
mod headers;
mod layer;
mod limits;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis_store;
mod rejection;
mod store;

pub use layer::{
    AnonymousPolicy, RateLimit, RateLimitLayer, RateLimitStats, ResponseFuture, StoreFailurePolicy,
};
pub use limits::{InvalidLimit, Limit, TierLimit, TierLimits};
pub use memory::MemoryRateLimitStore;
#[cfg(feature = "postgres")]
pub use postgres::PgRateLimitStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisRateLimitStore;
pub use rejection::RateLimitRejection;
pub use store::{Decision, RateLimitKey, RateLimitStore};
