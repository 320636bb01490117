#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::unwrap_used
)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod authz;
pub mod backfill;
pub mod clerk_api;
mod client_addr;
mod config;
mod core;
mod error;
mod extract;
mod guard;
mod handle;
pub mod health;
mod invalidate;
mod layer;
mod log_throttle;
pub mod machine;
pub mod metrics;
pub mod ratelimit;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod reconcile;
#[cfg(feature = "redis")]
mod redis_conn;
mod response_state;
mod rsa;
mod secret;
mod stats;
pub mod store;
mod sync;
#[cfg(feature = "test-util")]
pub mod testing;
mod time;
mod token;
mod token_cache;
mod token_type;
mod webhook;

pub use backfill::{
    BackfillOptions, BackfillReport, OrganizationBackfillReport, backfill, backfill_organizations,
};
pub use clerk_api::{ApiError, ClerkApi};
pub use client_addr::ClientAddress;
pub use config::{ClerkConfig, ClerkConfigBuilder, KeySource};
pub use error::{AuthError, ConfigError, ERROR_CODES};
pub use extract::{ClerkMachine, ClerkPrincipal, ClerkUser, MissingClerkLayer, PrincipalRejection};
pub use guard::{Authorized, GuardRejection, Require, RequireLayer, Requirement};
pub use handle::{ClerkSync, ClerkSyncBuilder};
#[cfg(feature = "postgres")]
pub use invalidate::PgChannel;
#[cfg(feature = "redis")]
pub use invalidate::RedisChannel;
pub use layer::{ClerkSyncLayer, ClerkSyncService, ResponseFuture};
#[cfg(feature = "postgres")]
pub use ratelimit::PgRateLimitStore;
#[cfg(feature = "redis")]
pub use ratelimit::RedisRateLimitStore;
pub use ratelimit::{Limit, MemoryRateLimitStore, RateLimitLayer, TierLimit, TierLimits};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use reconcile::{
    OrganizationReconcileReport, ReconcileOptions, ReconcileReport, reconcile,
    reconcile_organizations,
};
pub use secret::Secret;
pub use stats::Stats;
pub use store::MemoryUserStore;
#[cfg(feature = "postgres")]
pub use store::postgres::{PgUserStore, migrate};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{SqliteUserStore, migrate_sqlite};
pub use sync::{FailurePolicy, ProfileClaims, ProfileSource};
pub use token::{AuthorizedPartyPolicy, SessionClaims, Verifier};
pub use token_type::TokenType;
pub use webhook::WebhookError;
