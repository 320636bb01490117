//! Clerk webhooks: Svix signature check on the raw body, then `user.*` events through the store.
//!
//! Deliveries are unordered and retried for days, so every write is versioned (Clerk's
//! `updated_at`), a deletion is a tombstone no later event undoes, and a redelivered `svix-id`
//! is a no-op. Each applied event evicts the user from every process's synced-user cache.

mod error;
mod events;
mod svix;

pub use error::WebhookError;
pub(crate) use events::router;
#[cfg(feature = "test-util")]
pub(crate) use svix::sign;
