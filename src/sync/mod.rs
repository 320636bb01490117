//! Syncing verified users into the database: profiles, the store trait and its backends, and
//! the synced-user cache.

pub(crate) mod budget;
pub(crate) mod cache;
pub(crate) mod profile;
pub(crate) mod store;

pub use cache::{FailurePolicy, ProfileSource};
pub use profile::{ProfileClaims, UserProfile};
#[cfg(feature = "postgres")]
pub use store::postgres::{PgUserStore, migrate};
#[cfg(feature = "sqlite")]
pub use store::sqlite::{SqliteUserStore, migrate_sqlite};
pub use store::{
    ImportCounts, StoreError, StoreFuture, UpsertOutcome, UserChange, UserStore, WebhookOutcome,
};
