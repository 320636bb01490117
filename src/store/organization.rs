//! Organizations and memberships: [`OrganizationStore`], the snapshots it writes, and the
//! Clerk objects they are read from.
//!
//! The rules mirror the user store's. Organizations: per-field versions, NULL never erases,
//! the tier is set on insert only, a deleted organization is never resurrected. Memberships
//! are keyed by (organization, user) and carry one versioned field, the role; a deletion is a
//! version too, so a snapshot newer than it (a token issued after a re-invitation, or
//! `organizationMembership.created`) restores the membership, while an older one changes
//! nothing. Deleting an organization deletes its memberships, and no membership of a deleted
//! organization is written again.

use serde::Deserialize;

use super::{ImportCounts, StoreFuture, WebhookOutcome};

/// A snapshot of a Clerk organization. `None` fields are "unknown", never "erase";
/// `version_ms` orders snapshots (Clerk's `updated_at`, or the token's `iat` for claims).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrganizationProfile {
    /// Clerk organization id (`org_...`).
    pub id: String,
    /// The organization's slug.
    pub slug: Option<String>,
    /// Its name (never in session tokens: webhooks and the Backend API only).
    pub name: Option<String>,
    /// Its image URL (webhooks and the Backend API only).
    pub image_url: Option<String>,
    /// Version of this snapshot, Unix milliseconds.
    pub version_ms: Option<i64>,
}

impl OrganizationProfile {
    /// A snapshot that knows only the organization id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }
}

/// A snapshot of one membership: the user's role in the organization at `version_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipSnapshot {
    /// Clerk organization id.
    pub organization_id: String,
    /// Clerk user id.
    pub user_id: String,
    /// The role key (`org:admin`), when known.
    pub role: Option<String>,
    /// Version of this snapshot, Unix milliseconds; a snapshot without one never restores a
    /// deleted membership.
    pub version_ms: Option<i64>,
}

impl MembershipSnapshot {
    /// A snapshot of `user_id`'s membership of `organization_id`.
    pub fn new(
        organization_id: impl Into<String>,
        user_id: impl Into<String>,
        role: Option<String>,
        version_ms: Option<i64>,
    ) -> Self {
        Self {
            organization_id: organization_id.into(),
            user_id: user_id.into(),
            role,
            version_ms,
        }
    }
}

/// A change from an `organization.*` or `organizationMembership.*` webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrganizationChange {
    /// `organization.created` / `organization.updated`.
    Upsert(OrganizationProfile),
    /// `organization.deleted`: a tombstone (name, slug and image cleared) that no later
    /// snapshot undoes; every membership of the organization is deleted with it.
    Delete {
        /// Clerk organization id.
        organization_id: String,
        /// Version of the deletion (the event's timestamp), Unix milliseconds.
        version_ms: Option<i64>,
    },
    /// `organizationMembership.created` / `.updated`: the organization snapshot the event
    /// carries, then the membership.
    UpsertMembership(OrganizationProfile, MembershipSnapshot),
    /// `organizationMembership.deleted`, versioned by the event's timestamp: applies unless
    /// the membership holds a newer snapshot.
    DeleteMembership(OrganizationProfile, MembershipSnapshot),
}

impl OrganizationChange {
    /// The organization this change is about.
    pub fn organization_id(&self) -> &str {
        match self {
            Self::Upsert(org) => &org.id,
            Self::Delete {
                organization_id, ..
            } => organization_id,
            Self::UpsertMembership(org, _) | Self::DeleteMembership(org, _) => &org.id,
        }
    }

    /// The user whose membership changes, for membership events.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Self::UpsertMembership(_, membership) | Self::DeleteMembership(_, membership) => {
                Some(&membership.user_id)
            }
            Self::Upsert(_) | Self::Delete { .. } => None,
        }
    }
}

/// The result of [`OrganizationStore::ensure_organization`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrganizationOutcome {
    /// The organization exists (now) and is not deleted.
    Active {
        /// Its tier, as stored.
        tier: String,
        /// `true` when this call created the row.
        inserted: bool,
    },
    /// The organization is deleted here; nothing was written.
    Deleted,
}

/// The result of [`OrganizationStore::ensure_membership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipOutcome {
    /// The membership exists (now) and is not deleted.
    Active {
        /// `true` when this call created the row (a restored one counts as updated).
        inserted: bool,
    },
    /// Nothing was written: the membership was deleted by something newer than the snapshot,
    /// or its organization is deleted (or unknown).
    Refused,
}

/// Where organizations and memberships are written: [`crate::PgUserStore`],
/// [`crate::SqliteUserStore`] and [`crate::store::MemoryUserStore`] implement it, and hand it
/// out through [`UserStore::organizations`](super::UserStore::organizations). Each method is
/// one atomic operation with the rules of the module documentation.
pub trait OrganizationStore: Send + Sync {
    /// Inserts or updates the organization (recording a visit) and returns its tier; a
    /// deleted organization is answered [`OrganizationOutcome::Deleted`] and not written.
    fn ensure_organization<'a>(
        &'a self,
        organization: &'a OrganizationProfile,
    ) -> StoreFuture<'a, OrganizationOutcome>;

    /// Inserts, updates or restores the membership when its organization is live (the row must
    /// exist: call [`ensure_organization`](Self::ensure_organization) first) and no deletion
    /// newer than the snapshot is recorded; otherwise writes nothing.
    fn ensure_membership<'a>(
        &'a self,
        membership: &'a MembershipSnapshot,
    ) -> StoreFuture<'a, MembershipOutcome>;

    /// Applies a webhook delivery once, as [`UserStore::apply_webhook`](super::UserStore::apply_webhook)
    /// does (the same delivery-id table): a delivery id seen before changes nothing.
    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a OrganizationChange,
    ) -> StoreFuture<'a, WebhookOutcome>;

    /// Writes a page of organizations from the Backend API (no visit recorded; a snapshot that
    /// changes nothing writes nothing) and counts what happened.
    fn import_organizations<'a>(
        &'a self,
        organizations: &'a [OrganizationProfile],
    ) -> StoreFuture<'a, ImportCounts>;

    /// Writes a page of memberships from the Backend API (their organizations first, as
    /// organization snapshots) and counts what happened to the memberships: `deleted` counts
    /// those refused (deleted by something newer, or of a deleted organization).
    fn import_memberships<'a>(
        &'a self,
        memberships: &'a [(OrganizationProfile, MembershipSnapshot)],
    ) -> StoreFuture<'a, ImportCounts>;
}

/// An organization object as Clerk's webhooks and Backend API send it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClerkOrganizationObject {
    id: String,
    name: Option<String>,
    slug: Option<String>,
    image_url: Option<String>,
    /// Unix milliseconds.
    updated_at: Option<i64>,
}

impl ClerkOrganizationObject {
    pub(crate) fn into_profile(self) -> OrganizationProfile {
        let known = |value: Option<String>| value.filter(|v| !v.is_empty());
        OrganizationProfile {
            id: self.id,
            slug: known(self.slug),
            name: known(self.name),
            image_url: known(self.image_url),
            version_ms: self.updated_at,
        }
    }
}

/// An organization membership object (`organization_membership`) as Clerk sends it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ClerkMembershipObject {
    role: Option<String>,
    organization: ClerkOrganizationObject,
    public_user_data: Option<PublicUserData>,
    /// Unix milliseconds.
    updated_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
struct PublicUserData {
    user_id: Option<String>,
}

impl ClerkMembershipObject {
    /// The organization snapshot and the membership, versioned by the membership's
    /// `updated_at` (or `version_ms` when given: a deletion's event time). `None` without a
    /// user id.
    pub(crate) fn into_snapshots(
        self,
        version_ms: Option<i64>,
    ) -> Option<(OrganizationProfile, MembershipSnapshot)> {
        let user_id = self
            .public_user_data
            .and_then(|data| data.user_id)
            .filter(|id| !id.is_empty())?;
        let organization = self.organization.into_profile();
        let membership = MembershipSnapshot {
            organization_id: organization.id.clone(),
            user_id,
            role: self.role.filter(|role| !role.is_empty()),
            version_ms: version_ms.or(self.updated_at),
        };
        Some((organization, membership))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn membership_objects_give_both_snapshots() {
        let object: ClerkMembershipObject = serde_json::from_value(json!({
            "object": "organization_membership", "id": "orgmem_1", "role": "org:member",
            "permissions": [], "public_metadata": {}, "created_at": 1, "updated_at": 1716883500000_i64,
            "organization": {"object": "organization", "id": "org_1", "name": "Acme",
                             "slug": "acme", "image_url": "", "updated_at": 1716883200000_i64},
            "public_user_data": {"user_id": "user_1", "first_name": null}
        }))
        .unwrap();
        let (org, membership) = object.clone().into_snapshots(None).unwrap();
        assert_eq!(org.slug.as_deref(), Some("acme"));
        assert_eq!(org.image_url, None);
        assert_eq!(org.version_ms, Some(1_716_883_200_000));
        assert_eq!(membership.user_id, "user_1");
        assert_eq!(membership.role.as_deref(), Some("org:member"));
        assert_eq!(membership.version_ms, Some(1_716_883_500_000));
        let (_, deleted) = object.into_snapshots(Some(5)).unwrap();
        assert_eq!(deleted.version_ms, Some(5));
    }
}
