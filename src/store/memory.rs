//! [`MemoryUserStore`]: the store rules in a process's memory, for tests and prototypes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::memory_orgs::{MemoryMembership, MemoryOrganization, OrgTables};
use super::{
    ImportCounts, InvalidationChannel, MembershipOutcome, MembershipSnapshot, OrganizationChange,
    OrganizationOutcome, OrganizationProfile, OrganizationStore, StoreFuture, UpsertOutcome,
    UserChange, UserProfile, UserStore, WebhookOutcome,
};
use crate::time::unix_now;

/// Keeps users in memory with exactly the rules of the SQL stores (per-field versions, no NULL
/// overwrites, tier on insert only, tombstones never revived, deliveries applied once); it
/// passes the same behaviour suite. Nothing survives the process and nothing is shared with
/// another one, so it has no invalidation channel: use it for tests of the layer that do not
/// test SQL, and for prototypes. Cheap to clone (clones share the users).
#[derive(Clone, Default)]
pub struct MemoryUserStore {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, MemoryUser>,
    deliveries: HashMap<String, Instant>,
    orgs: OrgTables,
}

/// One user as [`MemoryUserStore`] holds it (what a row of the SQL `users` table holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryUser {
    /// Clerk user id.
    pub id: String,
    /// Primary email address.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Profile image URL.
    pub image_url: Option<String>,
    /// The tier: `free` on insert, changed only by [`MemoryUserStore::set_tier`].
    pub tier: String,
    /// The newest snapshot version applied, Unix milliseconds.
    pub clerk_updated_at_ms: Option<i64>,
    /// When the layer last synced the user (Unix seconds); imports and webhooks leave it.
    pub last_seen_at: Option<i64>,
    /// `true` once deleted (personal fields cleared); never undone.
    pub deleted: bool,
    /// Per-field versions, in `email, first_name, last_name, username, image_url` order.
    versions: [Option<i64>; 5],
}

impl std::fmt::Debug for MemoryUserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryUserStore")
            .field("users", &self.len())
            .finish_non_exhaustive()
    }
}

impl MemoryUserStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data: every change below
        // is made on a copy and stored at the end.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The user with this id, deleted or not.
    pub fn user(&self, id: &str) -> Option<MemoryUser> {
        self.state().users.get(id).cloned()
    }

    /// Every user held, tombstones included, sorted by id.
    pub fn users(&self) -> Vec<MemoryUser> {
        let mut users: Vec<MemoryUser> = self.state().users.values().cloned().collect();
        users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        users
    }

    /// Users held, tombstones included.
    pub fn len(&self) -> usize {
        self.state().users.len()
    }

    /// `true` when no user was ever written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets a user's tier (what an app's billing code does in SQL); `false` if unknown. Call
    /// [`crate::ClerkSync::invalidate`] after it, as with the SQL stores.
    pub fn set_tier(&self, id: &str, tier: &str) -> bool {
        match self.state().users.get_mut(id) {
            Some(user) => {
                tier.clone_into(&mut user.tier);
                true
            }
            None => false,
        }
    }
}

impl MemoryUserStore {
    /// The organization with this id, deleted or not.
    pub fn organization(&self, id: &str) -> Option<MemoryOrganization> {
        self.state().orgs.orgs.get(id).cloned()
    }

    /// The membership of `user_id` in `organization_id`, deleted or not.
    pub fn membership(&self, organization_id: &str, user_id: &str) -> Option<MemoryMembership> {
        let key = (organization_id.to_owned(), user_id.to_owned());
        self.state().orgs.memberships.get(&key).cloned()
    }

    /// Sets an organization's tier; `false` if unknown. Call [`crate::ClerkSync::invalidate`]
    /// with its id after it.
    pub fn set_organization_tier(&self, id: &str, tier: &str) -> bool {
        match self.state().orgs.orgs.get_mut(id) {
            Some(org) => {
                tier.clone_into(&mut org.tier);
                true
            }
            None => false,
        }
    }

    /// Records a delivery id; `false` when it was seen before.
    fn fresh_delivery(state: &mut State, delivery_id: &str) -> bool {
        if state.deliveries.contains_key(delivery_id) {
            return false;
        }
        state
            .deliveries
            .insert(delivery_id.to_owned(), Instant::now());
        true
    }
}

impl MemoryUser {
    fn fields(&mut self) -> [&mut Option<String>; 5] {
        [
            &mut self.email,
            &mut self.first_name,
            &mut self.last_name,
            &mut self.username,
            &mut self.image_url,
        ]
    }
}

fn snapshot_fields(profile: &UserProfile) -> [&Option<String>; 5] {
    [
        &profile.email,
        &profile.first_name,
        &profile.last_name,
        &profile.username,
        &profile.image_url,
    ]
}

/// Whether a snapshot at `version` sets a field whose stored version is `stored`: it carries a
/// value, and the field never had a versioned value or the snapshot is at least as new (the
/// SQL stores' `field_applies`; a snapshot without a version compares as false).
fn applies(value: &Option<String>, stored: Option<i64>, version: Option<i64>) -> bool {
    value.is_some()
        && (stored.is_none() || matches!((version, stored), (Some(v), Some(s)) if v >= s))
}

/// The larger version, a missing one counting as none (SQL's `GREATEST`; `None < Some`).
fn newest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

fn inserted(profile: &UserProfile, seen: bool) -> MemoryUser {
    let mut user = MemoryUser {
        id: profile.id.clone(),
        tier: "free".to_owned(),
        clerk_updated_at_ms: profile.version_ms,
        last_seen_at: seen.then(unix_now),
        ..MemoryUser::default()
    };
    let values = snapshot_fields(profile);
    for (at, field) in user.fields().into_iter().enumerate() {
        field.clone_from(values[at]);
    }
    for (at, value) in values.iter().enumerate() {
        user.versions[at] = value.as_ref().and(profile.version_ms);
    }
    user
}

/// Applies `profile` to a live user field by field; `true` when a field's value or version
/// changed (what an import counts as an update).
fn apply(user: &mut MemoryUser, profile: &UserProfile) -> bool {
    let values = snapshot_fields(profile);
    let versions = user.versions;
    let mut changed = false;
    for (at, field) in user.fields().into_iter().enumerate() {
        if applies(values[at], versions[at], profile.version_ms) {
            changed |= *field != *values[at] || versions[at] != profile.version_ms;
            field.clone_from(values[at]);
        }
    }
    for (at, value) in values.iter().enumerate() {
        if applies(value, versions[at], profile.version_ms) {
            user.versions[at] = profile.version_ms;
        }
    }
    user.clerk_updated_at_ms = newest(user.clerk_updated_at_ms, profile.version_ms);
    changed
}

fn active(user: &MemoryUser, inserted: bool) -> UpsertOutcome {
    UpsertOutcome::Active {
        tier: user.tier.clone(),
        inserted,
        has_email: user.email.is_some(),
    }
}

impl State {
    fn upsert(&mut self, profile: &UserProfile, seen: bool) -> UpsertOutcome {
        match self.users.get_mut(&profile.id) {
            Some(user) if user.deleted => UpsertOutcome::Deleted,
            Some(user) => {
                apply(user, profile);
                if seen {
                    user.last_seen_at = Some(unix_now());
                }
                active(user, false)
            }
            None => {
                let user = inserted(profile, seen);
                let outcome = active(&user, true);
                self.users.insert(profile.id.clone(), user);
                outcome
            }
        }
    }

    fn delete(&mut self, user_id: &str, version_ms: Option<i64>) {
        let user = self
            .users
            .entry(user_id.to_owned())
            .or_insert_with(|| MemoryUser {
                id: user_id.to_owned(),
                tier: "free".to_owned(),
                ..MemoryUser::default()
            });
        for field in user.fields() {
            *field = None;
        }
        user.versions = [None; 5];
        user.deleted = true;
        user.clerk_updated_at_ms = newest(user.clerk_updated_at_ms, version_ms);
    }
}

impl UserStore for MemoryUserStore {
    fn upsert<'a>(&'a self, profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        let outcome = self.state().upsert(profile, true);
        Box::pin(async move { Ok(outcome) })
    }

    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a UserChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        let mut state = self.state();
        let outcome = if !Self::fresh_delivery(&mut state, delivery_id) {
            WebhookOutcome::Duplicate
        } else {
            match change {
                UserChange::Upsert(profile) => match state.upsert(profile, false) {
                    UpsertOutcome::Deleted => WebhookOutcome::UserDeleted,
                    UpsertOutcome::Active { .. } => WebhookOutcome::Applied,
                },
                UserChange::Delete {
                    user_id,
                    version_ms,
                } => {
                    state.delete(user_id, *version_ms);
                    WebhookOutcome::Applied
                }
            }
        };
        drop(state);
        Box::pin(async move { Ok(outcome) })
    }

    fn prune_webhook_deliveries(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        let mut state = self.state();
        let before = state.deliveries.len();
        state
            .deliveries
            .retain(|_, received| received.elapsed() <= older_than);
        let pruned = (before - state.deliveries.len()) as u64;
        drop(state);
        Box::pin(async move { Ok(pruned) })
    }

    fn import<'a>(&'a self, profiles: &'a [UserProfile]) -> StoreFuture<'a, ImportCounts> {
        let mut counts = ImportCounts::default();
        let mut state = self.state();
        for profile in super::newest_per_user(profiles) {
            match state.users.get_mut(&profile.id) {
                Some(user) if user.deleted => counts.deleted += 1,
                Some(user) => {
                    // An import that changes nothing writes nothing, the version included.
                    let mut updated = user.clone();
                    if apply(&mut updated, profile) {
                        *user = updated;
                        counts.updated += 1;
                    } else {
                        counts.unchanged += 1;
                    }
                }
                None => {
                    state
                        .users
                        .insert(profile.id.clone(), inserted(profile, false));
                    counts.inserted += 1;
                }
            }
        }
        drop(state);
        Box::pin(async move { Ok(counts) })
    }

    /// None: the store lives in one process.
    fn invalidation_channel(&self) -> Option<Arc<dyn InvalidationChannel>> {
        None
    }

    fn organizations(&self) -> Option<&dyn OrganizationStore> {
        Some(self)
    }
}

impl OrganizationStore for MemoryUserStore {
    fn ensure_organization<'a>(
        &'a self,
        organization: &'a OrganizationProfile,
    ) -> StoreFuture<'a, OrganizationOutcome> {
        let written = self.state().orgs.upsert(organization, true, false);
        let outcome = match written.written {
            Some((tier, inserted)) => OrganizationOutcome::Active { tier, inserted },
            None => OrganizationOutcome::Deleted,
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn ensure_membership<'a>(
        &'a self,
        membership: &'a MembershipSnapshot,
    ) -> StoreFuture<'a, MembershipOutcome> {
        let outcome = match self.state().orgs.membership(membership, false) {
            Some(inserted) => MembershipOutcome::Active { inserted },
            None => MembershipOutcome::Refused,
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a OrganizationChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        let mut state = self.state();
        let outcome = if !Self::fresh_delivery(&mut state, delivery_id) {
            WebhookOutcome::Duplicate
        } else {
            let orgs = &mut state.orgs;
            match change {
                OrganizationChange::Upsert(org) => {
                    if orgs.upsert(org, false, false).deleted {
                        WebhookOutcome::OrganizationDeleted
                    } else {
                        WebhookOutcome::Applied
                    }
                }
                OrganizationChange::Delete {
                    organization_id,
                    version_ms,
                } => {
                    orgs.delete(organization_id, *version_ms);
                    WebhookOutcome::Applied
                }
                OrganizationChange::UpsertMembership(org, membership) => {
                    if orgs.upsert(org, false, false).deleted {
                        WebhookOutcome::OrganizationDeleted
                    } else {
                        orgs.membership(membership, false);
                        WebhookOutcome::Applied
                    }
                }
                OrganizationChange::DeleteMembership(org, membership) => {
                    orgs.upsert(org, false, false);
                    orgs.delete_membership(membership);
                    WebhookOutcome::Applied
                }
            }
        };
        drop(state);
        Box::pin(async move { Ok(outcome) })
    }

    fn import_organizations<'a>(
        &'a self,
        organizations: &'a [OrganizationProfile],
    ) -> StoreFuture<'a, ImportCounts> {
        let counts = self.state().orgs.import_organizations(organizations);
        Box::pin(async move { Ok(counts) })
    }

    fn import_memberships<'a>(
        &'a self,
        memberships: &'a [(OrganizationProfile, MembershipSnapshot)],
    ) -> StoreFuture<'a, ImportCounts> {
        let counts = self.state().orgs.import_memberships(memberships);
        Box::pin(async move { Ok(counts) })
    }
}
