//! The [`UserStore`] trait and its backends.

use std::future::Future;
use std::pin::Pin;

use super::profile::UserProfile;
use crate::invalidate::Invalidator;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// Binds a snapshot's columns in the order every statement of both stores lists them: id,
/// email, first name, last name, username, image URL, version (ms).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn bind_profile<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    profile: &'q UserProfile,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    &'q String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(&profile.id)
        .bind(&profile.email)
        .bind(&profile.first_name)
        .bind(&profile.last_name)
        .bind(&profile.username)
        .bind(&profile.image_url)
        .bind(profile.version_ms)
}

/// Reads the upsert's `RETURNING tier, inserted, has_email`; no row back means the conflict's
/// `WHERE deleted_at IS NULL` failed: the user is deleted.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn upsert_outcome<R>(row: Option<R>) -> Result<UpsertOutcome, sqlx::Error>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(match row {
        Some(row) => UpsertOutcome::Active {
            tier: row.try_get("tier")?,
            inserted: row.try_get("inserted")?,
            has_email: row.try_get("has_email")?,
        },
        None => UpsertOutcome::Deleted,
    })
}

/// The profile columns a snapshot may fill (besides `id` and the version). Each has a version
/// column beside it, `<name>_version`: the version of the snapshot that last set that field.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
const PROFILE_COLUMNS: [&str; 5] = ["email", "first_name", "last_name", "username", "image_url"];

/// Every column a user store writes or reads, for checking a custom table.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
const REQUIRED_COLUMNS: [&str; 17] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "username",
    "image_url",
    "tier",
    "clerk_updated_at",
    "created_at",
    "updated_at",
    "last_seen_at",
    "deleted_at",
    "email_version",
    "first_name_version",
    "last_name_version",
    "username_version",
    "image_url_version",
];

/// Whether the snapshot (`excluded`) sets field `name` of row `u`: it carries a value (NULL
/// never erases), and its version is at least the field's (`>=`, so a redelivered snapshot is
/// a no-op rather than skipped), or the field never had a versioned value. A snapshot's
/// version only shadows the fields it carries. A NULL snapshot version compares as false.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn field_applies(name: &str) -> String {
    format!(
        "(excluded.{name} IS NOT NULL AND (u.{name}_version IS NULL \
         OR excluded.clerk_updated_at >= u.{name}_version))"
    )
}

/// `SET` clauses for the profile fields and their versions, field by field (see
/// [`field_applies`]). The same SQL in PostgreSQL and SQLite (`SET` reads the old row).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn versioned_field_updates() -> String {
    PROFILE_COLUMNS
        .iter()
        .map(|name| {
            let applies = field_applies(name);
            format!(
                "{name} = CASE WHEN {applies} THEN excluded.{name} ELSE u.{name} END, \
                 {name}_version = CASE WHEN {applies} THEN excluded.clerk_updated_at \
                     ELSE u.{name}_version END"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `true` when the snapshot sets at least one field.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn any_field_applies() -> String {
    PROFILE_COLUMNS
        .iter()
        .map(|name| field_applies(name))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The names of the version columns, in [`PROFILE_COLUMNS`] order, for an `INSERT` list.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn version_columns() -> String {
    PROFILE_COLUMNS
        .iter()
        .map(|name| format!("{name}_version"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of the version columns of a new row: `version` for each field that `value`
/// (a field name to the dialect's expression of its new value) says is known, else NULL.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn version_values(value: impl Fn(usize) -> String, version: &str) -> String {
    (0..PROFILE_COLUMNS.len())
        .map(|at| format!("CASE WHEN {} IS NOT NULL THEN {version} END", value(at)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `WHERE` of an import's `DO UPDATE`: the row is live and the snapshot changes a field's
/// value or version, so a re-import of the same data writes nothing and counts as unchanged.
/// `distinct` is the dialect's null-safe "differs" operator.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn import_update_condition(distinct: &str) -> String {
    let changed = PROFILE_COLUMNS
        .iter()
        .map(|name| {
            format!(
                "({applies} AND (excluded.{name} {distinct} u.{name} \
                 OR excluded.clerk_updated_at {distinct} u.{name}_version))",
                applies = field_applies(name)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    format!("u.deleted_at IS NULL AND ({changed})")
}

/// `SET` clauses of a delete: the personal fields and their versions cleared.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn cleared_fields() -> String {
    PROFILE_COLUMNS
        .iter()
        .map(|name| format!("{name} = NULL, {name}_version = NULL"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One snapshot per user id, the newest where a batch repeats one (a row cannot be updated
/// twice by one statement), sorted by id: concurrent imports then lock rows in the same
/// order and cannot deadlock each other.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn newest_per_user(profiles: &[UserProfile]) -> Vec<&UserProfile> {
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

/// The future returned by [`UserStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where synced users are written.
///
/// Implementations must make [`upsert`](Self::upsert) one idempotent, atomic operation with
/// these rules: insert the user with the default tier if absent; otherwise apply the snapshot
/// field by field, each field only if the snapshot carries it and its version is not older
/// than that field's stored version (a snapshot that carries only the email says nothing
/// about the names), never replacing a known field with `None`; keep `clerk_updated_at` as
/// the newest version applied; never touch `tier`; and never revive a deleted user (answer
/// [`UpsertOutcome::Deleted`] instead). Wrap a store to add behaviour (metrics, counting).
pub trait UserStore: Send + Sync + 'static {
    /// Inserts or updates the user and returns its tier.
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome>;

    /// Applies a webhook delivery once: records `delivery_id` (Svix's `svix-id`) and applies
    /// `change` in one transaction, and tells every process to evict the user. A delivery id
    /// seen before changes nothing ([`WebhookOutcome::Duplicate`]). An upsert follows the
    /// rules of [`upsert`](Self::upsert) but does not touch `last_seen_at`; a delete clears the
    /// personal fields, sets `deleted_at`, and creates a tombstone row if the user was unknown,
    /// so a late `user.created` cannot bring the user back.
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

    /// Writes a batch of full profiles (a page of the backfill) and counts what happened to
    /// each. The rules of [`upsert`](Self::upsert) hold, except that `last_seen_at` is not
    /// touched (an import is not a visit) and a snapshot that would change nothing writes
    /// nothing. A user repeated in the batch counts once.
    ///
    /// [`crate::PgUserStore`] writes the batch in one transaction of multi-row
    /// `INSERT ... SELECT FROM UNNEST(...)` statements (one per ~12 KiB of values, a few per
    /// 500-user page); [`crate::SqliteUserStore`] in one transaction. The default answers
    /// [`StoreError::Unsupported`].
    fn import<'a>(&'a self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ImportCounts> {
        let _ = profiles;
        Box::pin(async { Err(StoreError::Unsupported("imports")) })
    }

    /// Tells the other processes sharing this store to evict `user_id` from their caches.
    /// The default does nothing (a store used by one process only).
    fn publish_invalidation<'a>(&'a self, user_id: &'a str) -> StoreFuture<'a, ()> {
        let _ = user_id;
        Box::pin(async { Ok(()) })
    }

    /// Starts a background task that feeds other processes' invalidations to `invalidator`
    /// until [`Invalidator::closed`] resolves. Returns `false` when the store has no such
    /// channel (the default).
    fn start_listener(&self, invalidator: Invalidator) -> bool {
        let _ = invalidator;
        false
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
    /// The store does not implement this operation.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}
