//! Storage behind small traits: [`UserStore`] (the request path, webhooks and imports) and
//! [`InvalidationChannel`] (telling every process to evict a cached user), with the
//! PostgreSQL, SQLite and in-memory backends.
//!
//! Everything an implementer needs is here: the traits, their outcomes, [`UserChange`],
//! [`ImportCounts`], [`StoreError`] and [`StoreFuture`]. The backends pass one behaviour suite
//! (`tests/store.rs`).

pub use crate::error::{StoreError, StoreFuture};
pub use crate::invalidate::{ChannelEvent, ChannelStream, InvalidationChannel};
pub use memory::{MemoryUser, MemoryUserStore};
pub use memory_orgs::{MemoryMembership, MemoryOrganization};
pub use organization::{
    MembershipOutcome, MembershipSnapshot, OrganizationChange, OrganizationOutcome,
    OrganizationProfile, OrganizationStore,
};
pub use profile::UserProfile;

mod memory;
mod memory_orgs;
pub(crate) mod organization;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "postgres")]
mod postgres_orgs;
#[cfg(feature = "postgres")]
mod postgres_reconcile;
pub(crate) mod profile;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod reconcile;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_orgs;
#[cfg(feature = "sqlite")]
mod sqlite_reconcile;

use std::sync::Arc;

/// Where synced users are written.
///
/// [`upsert`](Self::upsert) must be one idempotent, atomic operation with these rules: insert
/// the user with the default tier if absent; otherwise apply the snapshot field by field, each
/// field only if the snapshot carries it and its version is not older than that field's
/// stored version (a snapshot that carries only the email says nothing about the names),
/// never replacing a known field with `None`; keep the newest version applied; never touch the
/// tier; and never revive a deleted user (answer [`UpsertOutcome::Deleted`] instead).
///
/// Wrap a store to add behaviour (metrics, counting): forward the methods you do not change.
/// Cache invalidation does not go through this trait, so a wrapper cannot switch it off by
/// forgetting a method: the handle publishes on its [`InvalidationChannel`] after every write
/// that changes a user, and [`invalidation_channel`](Self::invalidation_channel), the default
/// channel, has no default body.
pub trait UserStore: Send + Sync + 'static {
    /// Inserts or updates the user (and records the visit) and returns its tier.
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome>;

    /// Applies a webhook delivery once: records `delivery_id` (Svix's `svix-id`) and applies
    /// `change` in one transaction. A delivery id seen before changes nothing
    /// ([`WebhookOutcome::Duplicate`]). An upsert follows the rules of
    /// [`upsert`](Self::upsert) but does not record a visit; a delete clears the personal
    /// fields, sets the deletion time, and creates a tombstone row if the user was unknown, so
    /// a late `user.created` cannot bring the user back.
    ///
    /// The default answers [`StoreError::Unsupported`]: such a store cannot back webhooks.
    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a UserChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        let _ = (delivery_id, change);
        Box::pin(async { Err(StoreError::Unsupported("webhooks")) })
    }

    /// Forgets the webhook delivery ids recorded more than `older_than` ago (Svix retries for
    /// a few days; the handle's [`background`](crate::ClerkSync::background) task calls this
    /// hourly with 30 days). The default does nothing.
    fn prune_webhook_deliveries(&self, older_than: std::time::Duration) -> StoreFuture<'_, u64> {
        let _ = older_than;
        Box::pin(async { Ok(0) })
    }

    /// Writes a batch of full profiles (a page of the backfill) and counts what happened to
    /// each. The rules of [`upsert`](Self::upsert) hold, except that no visit is recorded (an
    /// import is not a visit) and a snapshot that would change nothing writes nothing. A user
    /// repeated in the batch counts once.
    ///
    /// [`PgUserStore`](crate::PgUserStore) writes the batch in one transaction of multi-row
    /// `INSERT ... SELECT FROM UNNEST(...)` statements (one per ~12 KiB of values, a few per
    /// 500-user page); [`SqliteUserStore`](crate::SqliteUserStore) in one transaction. The
    /// default answers [`StoreError::Unsupported`].
    fn import<'a>(&'a self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ImportCounts> {
        let _ = profiles;
        Box::pin(async { Err(StoreError::Unsupported("imports")) })
    }

    /// Whether the store can be reached now, for [`crate::ClerkSync::health`]: PostgreSQL and
    /// SQLite run `SELECT 1`. The default answers `Ok` (a store with nothing to reach); a
    /// wrapper forwards its inner store's.
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// The channel the handle uses when the builder is not given one
    /// ([`ClerkSyncBuilder::invalidation`](crate::ClerkSyncBuilder::invalidation)): `LISTEN`/
    /// `NOTIFY` for PostgreSQL; `None` for a store that one process uses alone (SQLite,
    /// memory). A wrapper returns its inner store's.
    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>>;

    /// The organization and membership tables, when this store keeps them (the three stores
    /// of this crate do). The default, `None`, leaves organizations out of sync: the layer
    /// trusts a token's organization claims as they are and writes nothing for them, and the
    /// `organization.*` webhooks are answered `ignored`. A wrapper returns its inner store's.
    fn organizations(&self) -> Option<&dyn OrganizationStore> {
        None
    }
}

/// A change to one user, from a webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserChange {
    /// `user.created` / `user.updated`: a versioned snapshot.
    Upsert(UserProfile),
    /// `user.deleted`: a soft delete that no later snapshot undoes.
    Delete {
        /// Clerk user id.
        user_id: String,
        /// Version of the deletion (the event's timestamp), Unix milliseconds.
        version_ms: Option<i64>,
    },
}

impl UserChange {
    /// The user this change is about.
    pub fn user_id(&self) -> &str {
        match self {
            Self::Upsert(profile) => &profile.id,
            Self::Delete { user_id, .. } => user_id,
        }
    }
}

/// The result of [`UserStore::apply_webhook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookOutcome {
    /// The delivery was recorded and its change applied (an older snapshot applies as a no-op).
    Applied,
    /// The delivery id was seen before; nothing changed.
    Duplicate,
    /// An upsert for a deleted user: recorded, nothing changed.
    UserDeleted,
    /// An upsert of a deleted organization, or of a membership in one: recorded, nothing
    /// changed.
    OrganizationDeleted,
}

/// What [`UserStore::import`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportCounts {
    /// New rows.
    pub inserted: u64,
    /// Rows changed by a newer snapshot.
    pub updated: u64,
    /// Rows left as they were: same data, or the stored snapshot is newer.
    pub unchanged: u64,
    /// Users whose row is deleted: skipped, never revived.
    pub deleted: u64,
}

impl ImportCounts {
    /// Counts one row of an organization import: `written` is `Some(inserted)` when the row
    /// was written; otherwise `refused` tells a deleted row from an unchanged one.
    pub(crate) fn record(&mut self, written: Option<bool>, refused: bool) {
        match written {
            Some(true) => self.inserted += 1,
            Some(false) => self.updated += 1,
            None if refused => self.deleted += 1,
            None => self.unchanged += 1,
        }
    }
}

impl std::ops::AddAssign for ImportCounts {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
    }
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
        /// `true` when the row (after this call) has an email: the layer then never asks the
        /// Backend API for the profile.
        has_email: bool,
    },
    /// The user was deleted; nothing was written.
    Deleted,
}

/// One snapshot per user id, the newest where a batch repeats one (a row cannot be updated
/// twice by one statement), sorted by id: concurrent imports then lock rows in the same
/// order and cannot deadlock each other.
pub(crate) fn newest_per_user(profiles: &[UserProfile]) -> Vec<&UserProfile> {
    let mut position: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(profiles.len());
    let mut unique: Vec<&UserProfile> = Vec::with_capacity(profiles.len());
    for profile in profiles {
        match position.get(profile.id.as_str()) {
            Some(&at) => {
                if profile.version_ms >= unique[at].version_ms {
                    unique[at] = profile;
                }
            }
            None => {
                position.insert(&profile.id, unique.len());
                unique.push(profile);
            }
        }
    }
    unique.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    unique
}
