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

pub mod backfill;
pub mod clerk_api;
mod client_addr;
mod config;
mod error;
mod extract;
mod handle;
mod invalidate;
mod layer;
pub mod ratelimit;
mod response;
mod sessions;
mod stats;
mod sync;
mod token;
mod webhook;

#[cfg(feature = "test-util")]
pub mod testing;

pub use backfill::{BackfillOptions, BackfillReport, backfill};
pub use clerk_api::{ApiError, ClerkApi};
pub use client_addr::ClientAddress;
pub use config::{ClerkConfig, ClerkConfigBuilder, KeySource, Secret};
pub use error::{AuthError, ConfigError};
pub use extract::{ClerkUser, MissingClerkLayer};
pub use handle::{ClerkSync, ClerkSyncBuilder};
pub use invalidate::Invalidator;
pub use layer::{ClerkSyncLayer, ClerkSyncService, ResponseFuture};
#[cfg(feature = "postgres")]
pub use ratelimit::PgRateLimitStore;
pub use ratelimit::{Limit, MemoryRateLimitStore, RateLimitLayer, TierLimits};
pub use stats::Stats;
pub use sync::{
    FailurePolicy, ImportCounts, ProfileClaims, ProfileSource, StoreError, StoreFuture,
    UpsertOutcome, UserChange, UserProfile, UserStore, WebhookOutcome,
};
#[cfg(feature = "postgres")]
pub use sync::{PgUserStore, migrate};
#[cfg(feature = "sqlite")]
pub use sync::{SqliteUserStore, migrate_sqlite};
pub use token::{AuthorizedPartyPolicy, SessionClaims, Verifier};
pub use webhook::WebhookError;
