//! [`Organizations`]: the synced-organization and synced-membership caches, and the writes
//! behind their misses.
//!
//! A session with an active organization needs two rows besides its user's: the
//! organization's (written once per organization and cache lifetime, concurrent first
//! requests of all its members sharing the write) and the membership's (once per member and
//! cache lifetime). A cached membership is current while its user and its organization are:
//! evicting a user (a membership webhook does) or an organization (an organization webhook
//! does) makes every membership derived from it, and every cached session holding that
//! organization, be synced again on its next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moka::future::Cache;

use super::options::{FailurePolicy, SyncOptions};
use super::users::{SyncedUser, SyncedUsers};
use crate::error::AuthError;
use crate::log_throttle::Throttle;
use crate::stats::Counters;
use crate::store::{
    MembershipOutcome, MembershipSnapshot, OrganizationOutcome, OrganizationProfile,
    OrganizationStore, StoreError,
};
use crate::token::SessionClaims;

/// What the sync made of a session's active organization, handed to its `ClerkUser`.
#[derive(Debug, Clone, Default)]
pub(crate) enum OrgStanding {
    /// No active organization, or one that is not synced (the store keeps none, or failed
    /// under the open policy): the claims stand as they are.
    #[default]
    Claims,
    /// Organization and membership rows exist: the organization's synced entry (its tier).
    Synced(Arc<SyncedUser>),
    /// Deleted here (the organization, or the membership after the token was issued): the
    /// session has no organization, and nothing was written.
    Refused,
}

/// The outcome of [`Organizations::ensure`].
#[derive(Debug, Clone)]
pub(crate) struct OrgSync {
    pub(crate) standing: OrgStanding,
    /// `false` when the store failed under the open policy: the claims passed this once, the
    /// session is not cached, and the next request tries again.
    pub(crate) cacheable: bool,
}

impl OrgSync {
    /// No organization to sync (none in the token, or a caller that carries none).
    pub(crate) const NONE: Self = Self {
        standing: OrgStanding::Claims,
        cacheable: true,
    };

    fn settled(standing: OrgStanding) -> Self {
        Self {
            standing,
            cacheable: true,
        }
    }
}

/// A synced membership: current while both its user and its organization are.
#[derive(Debug)]
struct SyncedMembership {
    user: Arc<SyncedUser>,
    organization: Arc<SyncedUser>,
}

#[derive(Debug, Clone)]
enum Failure {
    Refused,
    Unavailable,
}

type MembershipKey = (Arc<str>, Arc<str>);

/// The organization and membership caches of one [`super::Syncer`].
pub(crate) struct Organizations {
    /// Organization id → its synced entry (the tier), with the users' eviction rules.
    orgs: SyncedUsers,
    memberships: Cache<MembershipKey, Arc<SyncedMembership>>,
    failures: Throttle,
    not_kept_warned: AtomicBool,
}

impl Organizations {
    pub(crate) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            orgs: SyncedUsers::new(capacity, ttl),
            memberships: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            failures: Throttle::new(Duration::from_secs(60)),
            not_kept_warned: AtomicBool::new(false),
        }
    }

    /// The organization cache, for evictions and the listener.
    pub(crate) fn orgs(&self) -> &SyncedUsers {
        &self.orgs
    }

    /// Makes sure the rows of the session's active organization and membership exist, once
    /// per cache lifetime. `user` is the session's synced user, current now.
    pub(crate) async fn ensure(
        &self,
        store: Option<&dyn OrganizationStore>,
        claims: &SessionClaims,
        user: &Arc<SyncedUser>,
        users: &SyncedUsers,
        options: &SyncOptions,
        counters: &Counters,
    ) -> Result<OrgSync, AuthError> {
        let Some(active) = crate::authz::active_organization(claims) else {
            return Ok(OrgSync::NONE);
        };
        let Some(store) = store else {
            if !self.not_kept_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the user store keeps no organizations (UserStore::organizations is None): \
                     organization claims are trusted as they are and nothing is written for them"
                );
            }
            return Ok(OrgSync::NONE);
        };
        let version_ms = claims.iat.checked_mul(1000);
        let key: MembershipKey = (
            Arc::from(active.id.as_str()),
            Arc::from(claims.sub.as_str()),
        );
        if let Some(known) = self.memberships.get(&key).await {
            if users.is_current(&known.user) && self.orgs.is_current(&known.organization) {
                return Ok(OrgSync::settled(OrgStanding::Synced(
                    known.organization.clone(),
                )));
            }
            self.memberships.invalidate(&key).await;
        }
        let load = async {
            let organization = self
                .organization(store, &active, version_ms, options, counters)
                .await?;
            let membership = MembershipSnapshot::new(
                active.id.clone(),
                claims.sub.clone(),
                active.role.clone(),
                version_ms,
            );
            Counters::bump(&counters.membership_writes);
            match self
                .write(store.ensure_membership(&membership), options)
                .await?
            {
                MembershipOutcome::Active { .. } => Ok(Arc::new(SyncedMembership {
                    user: user.clone(),
                    organization,
                })),
                _ => {
                    tracing::info!(
                        user.id = %claims.sub,
                        organization.id = %active.id,
                        "membership deleted after the token was issued: no active organization"
                    );
                    Err(Failure::Refused)
                }
            }
        };
        match self.memberships.try_get_with(key, load).await {
            Ok(membership) => Ok(OrgSync::settled(OrgStanding::Synced(
                membership.organization.clone(),
            ))),
            Err(failure) => match *failure {
                Failure::Refused => Ok(OrgSync::settled(OrgStanding::Refused)),
                Failure::Unavailable => match options.failure_policy {
                    FailurePolicy::Closed => Err(AuthError::SyncUnavailable),
                    FailurePolicy::Open => Ok(OrgSync {
                        standing: OrgStanding::Claims,
                        cacheable: false,
                    }),
                },
            },
        }
    }

    /// The organization's synced entry: cached, or written now (one write for every
    /// concurrent first request). Kept out of the cache's trust when an eviction landed while
    /// it was written.
    async fn organization(
        &self,
        store: &dyn OrganizationStore,
        active: &crate::authz::ActiveOrganization,
        version_ms: Option<i64>,
        options: &SyncOptions,
        counters: &Counters,
    ) -> Result<Arc<SyncedUser>, Failure> {
        let id: Arc<str> = Arc::from(active.id.as_str());
        if let Some(known) = self.orgs.cache.get(&id).await {
            if self.orgs.is_current(&known) {
                return Ok(known);
            }
            self.orgs.remove(&id).await;
        }
        let load = async {
            let epoch = self.orgs.epoch();
            let mut profile = OrganizationProfile::new(active.id.clone());
            profile.slug = active.slug.clone();
            profile.version_ms = version_ms;
            Counters::bump(&counters.organization_writes);
            match self
                .write(store.ensure_organization(&profile), options)
                .await?
            {
                OrganizationOutcome::Active { tier, .. } => {
                    let synced = self.orgs.synced(tier.into());
                    if self.orgs.epoch() != epoch {
                        synced.valid.store(false, Ordering::Release);
                    }
                    Ok(synced)
                }
                _ => {
                    tracing::info!(organization.id = %active.id, "token names a deleted organization: no active organization");
                    Err(Failure::Refused)
                }
            }
        };
        self.orgs
            .cache
            .try_get_with(id, load)
            .await
            .map_err(|failure| (*failure).clone())
    }

    /// A store call within the sync timeout; failures are logged (throttled).
    async fn write<T>(
        &self,
        call: crate::store::StoreFuture<'_, T>,
        options: &SyncOptions,
    ) -> Result<T, Failure> {
        let result = tokio::time::timeout(options.timeout, call)
            .await
            .unwrap_or_else(|_| Err(StoreError::Other("the organization write timed out".into())));
        result.map_err(|error| {
            if let Some(failures) = self.failures.hit() {
                tracing::error!(%error, failures, "organization sync failed (one line a minute while it fails)");
            }
            Failure::Unavailable
        })
    }
}
