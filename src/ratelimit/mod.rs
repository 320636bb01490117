//! Tier-aware rate limiting that runs after the sync layer: [`RateLimitLayer`], [`TierLimits`],
//! and the memory and Postgres stores.

mod layer;
mod limits;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod rejection;
mod store;

pub use layer::{
    AnonymousPolicy, RateLimit, RateLimitLayer, RateLimitStats, ResponseFuture, StoreFailurePolicy,
};
pub use limits::{InvalidLimit, Limit, TierLimit, TierLimits};
pub use memory::MemoryRateLimitStore;
#[cfg(feature = "postgres")]
pub use postgres::PgRateLimitStore;
pub use rejection::RateLimitRejection;
pub use store::{Decision, RateLimitKey, RateLimitStore};
