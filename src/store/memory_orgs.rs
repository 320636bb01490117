//! The organization tables of [`super::MemoryUserStore`]: the SQL stores' rules, in memory.

use std::collections::HashMap;

use super::{ImportCounts, MembershipSnapshot, OrganizationProfile};
use crate::time::unix_now;

/// One organization as [`super::MemoryUserStore`] holds it (a row of `organizations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryOrganization {
    /// Clerk organization id.
    pub id: String,
    /// Slug.
    pub slug: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Image URL.
    pub image_url: Option<String>,
    /// `free` on insert, changed only by [`super::MemoryUserStore::set_organization_tier`].
    pub tier: String,
    /// The newest snapshot version applied, Unix milliseconds.
    pub clerk_updated_at_ms: Option<i64>,
    /// When the layer last synced it (Unix seconds).
    pub last_seen_at: Option<i64>,
    /// `true` once deleted (fields cleared); never undone.
    pub deleted: bool,
    /// Per-field versions, in `slug, name, image_url` order.
    versions: [Option<i64>; 3],
}

/// One membership as [`super::MemoryUserStore`] holds it (a row of
/// `organization_memberships`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryMembership {
    /// Clerk organization id.
    pub organization_id: String,
    /// Clerk user id.
    pub user_id: String,
    /// Role key.
    pub role: Option<String>,
    /// Version of the role.
    pub role_version_ms: Option<i64>,
    /// The newest version applied (snapshot or deletion).
    pub clerk_updated_at_ms: Option<i64>,
    /// Version of the deletion in force.
    pub deleted_version_ms: Option<i64>,
    /// `true` while deleted (a newer snapshot restores it).
    pub deleted: bool,
}

/// Organizations and memberships, under the store's lock.
#[derive(Debug, Default)]
pub(super) struct OrgTables {
    pub(super) orgs: HashMap<String, MemoryOrganization>,
    pub(super) memberships: HashMap<(String, String), MemoryMembership>,
}

/// The SQL stores' `field_applies`: a value, and no stored version or one not newer.
fn applies(known: bool, stored: Option<i64>, version: Option<i64>) -> bool {
    known && (stored.is_none() || matches!((version, stored), (Some(v), Some(s)) if v >= s))
}

fn snapshot_fields(org: &OrganizationProfile) -> [&Option<String>; 3] {
    [&org.slug, &org.name, &org.image_url]
}

impl MemoryOrganization {
    fn fields(&mut self) -> [&mut Option<String>; 3] {
        [&mut self.slug, &mut self.name, &mut self.image_url]
    }
}

/// What an organization upsert did: `Some((tier, inserted))` when it wrote, and whether the
/// organization is deleted.
pub(super) struct Written {
    pub(super) written: Option<(String, bool)>,
    pub(super) deleted: bool,
}

impl OrgTables {
    pub(super) fn upsert(
        &mut self,
        org: &OrganizationProfile,
        seen: bool,
        import: bool,
    ) -> Written {
        let values = snapshot_fields(org);
        let Some(row) = self.orgs.get_mut(&org.id) else {
            let mut row = MemoryOrganization {
                id: org.id.clone(),
                tier: "free".to_owned(),
                clerk_updated_at_ms: org.version_ms,
                last_seen_at: seen.then(unix_now),
                ..MemoryOrganization::default()
            };
            for (at, field) in row.fields().into_iter().enumerate() {
                field.clone_from(values[at]);
            }
            for (at, value) in values.iter().enumerate() {
                row.versions[at] = value.as_ref().and(org.version_ms);
            }
            let written = Some((row.tier.clone(), true));
            self.orgs.insert(org.id.clone(), row);
            return Written {
                written,
                deleted: false,
            };
        };
        if row.deleted {
            return Written {
                written: None,
                deleted: true,
            };
        }
        let versions = row.versions;
        let applying: Vec<bool> = (0..3)
            .map(|at| applies(values[at].is_some(), versions[at], org.version_ms))
            .collect();
        let stored = [&row.slug, &row.name, &row.image_url];
        let changes = (0..3)
            .any(|at| applying[at] && (stored[at] != values[at] || versions[at] != org.version_ms));
        if import && !changes {
            return Written {
                written: None,
                deleted: false,
            };
        }
        for (at, field) in row.fields().into_iter().enumerate() {
            if applying[at] {
                field.clone_from(values[at]);
            }
        }
        for (at, applied) in applying.iter().enumerate() {
            if *applied {
                row.versions[at] = org.version_ms;
            }
        }
        row.clerk_updated_at_ms = row.clerk_updated_at_ms.max(org.version_ms);
        if seen {
            row.last_seen_at = Some(unix_now());
        }
        Written {
            written: Some((row.tier.clone(), false)),
            deleted: false,
        }
    }

    /// `Some(inserted)` when the membership was written.
    pub(super) fn membership(&mut self, m: &MembershipSnapshot, import: bool) -> Option<bool> {
        let live = self
            .orgs
            .get(&m.organization_id)
            .is_some_and(|org| !org.deleted);
        if !live {
            return None;
        }
        let key = (m.organization_id.clone(), m.user_id.clone());
        let Some(row) = self.memberships.get_mut(&key) else {
            self.memberships.insert(
                key,
                MemoryMembership {
                    organization_id: m.organization_id.clone(),
                    user_id: m.user_id.clone(),
                    role: m.role.clone(),
                    role_version_ms: m.role.as_ref().and(m.version_ms),
                    clerk_updated_at_ms: m.version_ms,
                    deleted_version_ms: None,
                    deleted: false,
                },
            );
            return Some(true);
        };
        let restorable = !row.deleted
            || matches!(m.version_ms, Some(v) if v > row.deleted_version_ms.unwrap_or(i64::MIN));
        let role_applies = applies(m.role.is_some(), row.role_version_ms, m.version_ms);
        let changes = row.deleted
            || (role_applies && (row.role != m.role || row.role_version_ms != m.version_ms));
        if !restorable || (import && !changes) {
            return None;
        }
        if role_applies {
            row.role.clone_from(&m.role);
            row.role_version_ms = m.version_ms;
        }
        row.clerk_updated_at_ms = row.clerk_updated_at_ms.max(m.version_ms);
        row.deleted = false;
        row.deleted_version_ms = None;
        Some(false)
    }

    /// After a membership write that wrote nothing: refused (organization not live, or a
    /// newer deletion stands) rather than unchanged.
    pub(super) fn refused(&self, m: &MembershipSnapshot) -> bool {
        let live = self
            .orgs
            .get(&m.organization_id)
            .is_some_and(|org| !org.deleted);
        !live
            || self
                .memberships
                .get(&(m.organization_id.clone(), m.user_id.clone()))
                .is_some_and(|row| row.deleted)
    }

    pub(super) fn delete(&mut self, id: &str, version_ms: Option<i64>) {
        let org = self
            .orgs
            .entry(id.to_owned())
            .or_insert_with(|| MemoryOrganization {
                id: id.to_owned(),
                tier: "free".to_owned(),
                ..MemoryOrganization::default()
            });
        for field in org.fields() {
            *field = None;
        }
        org.versions = [None; 3];
        org.deleted = true;
        org.clerk_updated_at_ms = org.clerk_updated_at_ms.max(version_ms);
        for row in self.memberships.values_mut() {
            if row.organization_id == id && !row.deleted {
                row.deleted = true;
                row.deleted_version_ms = version_ms;
                row.clerk_updated_at_ms = row.clerk_updated_at_ms.max(version_ms);
            }
        }
    }

    pub(super) fn delete_membership(&mut self, m: &MembershipSnapshot) {
        let key = (m.organization_id.clone(), m.user_id.clone());
        let row = self
            .memberships
            .entry(key)
            .or_insert_with(|| MemoryMembership {
                organization_id: m.organization_id.clone(),
                user_id: m.user_id.clone(),
                ..MemoryMembership::default()
            });
        let applies = match (m.version_ms, row.clerk_updated_at_ms) {
            (Some(v), Some(stored)) => v >= stored,
            _ => true,
        };
        if applies {
            row.deleted = true;
            row.deleted_version_ms = row.deleted_version_ms.max(m.version_ms);
            row.clerk_updated_at_ms = row.clerk_updated_at_ms.max(m.version_ms);
        }
    }

    pub(super) fn import_organizations(&mut self, orgs: &[OrganizationProfile]) -> ImportCounts {
        let mut counts = ImportCounts::default();
        for org in orgs {
            let written = self.upsert(org, false, true);
            counts.record(
                written.written.map(|(_, inserted)| inserted),
                written.deleted,
            );
        }
        counts
    }

    pub(super) fn import_memberships(
        &mut self,
        memberships: &[(OrganizationProfile, MembershipSnapshot)],
    ) -> ImportCounts {
        let mut counts = ImportCounts::default();
        for (org, membership) in memberships {
            self.upsert(org, false, true);
            let written = self.membership(membership, true);
            let refused = written.is_none() && self.refused(membership);
            counts.record(written, refused);
        }
        counts
    }
}
