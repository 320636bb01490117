//! The [`UserStore`] trait and its backends.

use std::future::Future;
use std::pin::Pin;

use super::profile::UserProfile;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;

/// The future returned by [`UserStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where synced users are written.
///
/// Implementations must make [`upsert`](Self::upsert) one idempotent, atomic operation with
/// these rules: insert the user with the default tier if absent; otherwise apply the snapshot
/// only if its version is not older than the stored one, never replacing a known field with
/// `None`; never touch `tier`; and never revive a deleted user (answer
/// [`UpsertOutcome::Deleted`] instead). Wrap a store to add behaviour (metrics, counting).
pub trait UserStore: Send + Sync + 'static {
    /// Inserts or updates the user and returns its tier.
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome>;
}

/// The result of [`UserStore::upsert`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpsertOutcome {
    /// The user exists (now) and is not deleted.
    Active {
        /// The user's tier, as stored.
        tier: String,
        /// `true` when this call created the row.
        inserted: bool,
    },
    /// The user was deleted; nothing was written.
    Deleted,
}

/// A store failure; the layer answers 503 `sync_unavailable` (or passes, failing open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another failure of a custom store.
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}
