//! How the syncer behaves: failure policy, profile source, and the options the builder passes.

use std::sync::Arc;
use std::time::Duration;

use super::budget::Budget;
use super::profile::ProfileClaims;
use crate::clerk_api::ClerkApi;

/// What the layer does when the store fails on a cache miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Answer 503 `sync_unavailable` with `Retry-After` (the default): no handler runs without
    /// its user row.
    #[default]
    Closed,
    /// Let the request through with [`crate::ClerkUser::synced`] `== false` and the default
    /// tier; the failure is logged and counted, and the next request tries again.
    Open,
}

/// Where a newly seen user's profile comes from.
///
/// Clerk's session tokens carry no email or name unless the instance adds them as custom
/// claims, so a row synced from claims alone often holds just the id. With a secret key, the
/// Backend API fills the gap: after the upsert, a row that has no email costs one
/// `GET /v1/users/{id}` (at most once per user-cache lifetime, under a per-process budget),
/// and the snapshot is versioned by Clerk's `updated_at`. A row that has the email never costs
/// a call, and a failed call never fails the request: the row the upsert wrote stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProfileSource {
    /// Token claims only; the Backend API is never called.
    Claims,
    /// Token claims, and the Backend API when the row still has no email and a secret key is
    /// configured (the default).
    #[default]
    ClaimsThenApi,
    /// The Backend API only (needs a secret key); profile claims are ignored, the upsert
    /// writes the id alone and the API fills a row that has no email.
    Api,
}

pub(crate) struct SyncOptions {
    pub(crate) capacity: u64,
    pub(crate) ttl: Duration,
    pub(crate) timeout: Duration,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) profile_claims: ProfileClaims,
    pub(crate) profile_source: ProfileSource,
    /// Present when a secret key is configured and the source may use it.
    pub(crate) api: Option<ClerkApi>,
    /// Bounds the Backend API calls of profile enrichment in this process.
    pub(crate) api_budget: Budget,
    pub(crate) default_tier: Arc<str>,
}
