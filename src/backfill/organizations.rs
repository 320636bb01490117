//! [`backfill_organizations`]: every organization and membership of the instance, through
//! `GET /v1/organizations` and `GET /v1/organization_memberships`.
//!
//! Both lists page by `limit`/`offset` only (no cursor), so the walk orders them oldest first
//! (`order_by=+created_at`): what is created during the walk lands after the pages already
//! read and is read at the end. A deletion during the walk shifts everything after it one
//! position towards the start, which would make the row at the next page boundary never be
//! read; each page therefore starts a few rows before the end of the previous one (a tenth
//! of the page, at most 10) and those rows, already read, are skipped. More deletions than
//! that between two pages can still skip rows: the layer writes an organization and a
//! membership on their first request anyway, and webhooks keep them current.

use std::collections::HashSet;
use std::time::Instant;

use serde::Deserialize;

use super::{BackfillOptions, BackfillReport, elapsed_ms};
use crate::clerk_api::{ApiError, ClerkApi, MAX_PAGE_SIZE};
use crate::store::organization::{ClerkMembershipObject, ClerkOrganizationObject};
use crate::store::{
    ImportCounts, MembershipSnapshot, OrganizationProfile, OrganizationStore, StoreError,
    StoreFuture, UserStore,
};

/// What [`backfill_organizations`] did: one report per list (the reports' "users" are
/// organizations, and memberships).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct OrganizationBackfillReport {
    /// The walk of `GET /v1/organizations`.
    pub organizations: BackfillReport,
    /// The walk of `GET /v1/organization_memberships`.
    pub memberships: BackfillReport,
}

impl OrganizationBackfillReport {
    /// `true` when both walks imported everything.
    pub fn is_success(&self) -> bool {
        self.organizations.is_success() && self.memberships.is_success()
    }
}

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
}

/// Imports every organization, then every membership, into `store`'s organization tables,
/// calling `progress` after each page. Pages are fetched and written one at a time (there are
/// far fewer organizations than users); a page that still fails after the client's retries
/// is counted as failed and stepped over, and after
/// [`BackfillOptions::max_consecutive_failures`] in a row the walk stops (`aborted`).
/// Versioned rules hold as for webhooks: older snapshots change nothing, deleted
/// organizations stay deleted, a membership deleted here by something newer than Clerk's
/// snapshot stays deleted. `Err(StoreError::Unsupported)` when the store keeps no
/// organizations.
pub async fn backfill_organizations(
    api: &ClerkApi,
    store: &dyn UserStore,
    options: BackfillOptions,
    mut progress: impl FnMut(&OrganizationBackfillReport),
) -> Result<OrganizationBackfillReport, StoreError> {
    let orgs = store
        .organizations()
        .ok_or(StoreError::Unsupported("organizations"))?;
    let organizations = walk(
        api,
        "/v1/organizations",
        options,
        |object: ClerkOrganizationObject| {
            let org = object.into_profile();
            Some((org.id.clone(), org))
        },
        |page: Vec<OrganizationProfile>| import_organizations(orgs, page),
        |walked| {
            progress(&OrganizationBackfillReport {
                organizations: walked.clone(),
                memberships: BackfillReport::default(),
            });
        },
    )
    .await;
    let memberships = walk(
        api,
        "/v1/organization_memberships",
        options,
        |object: ClerkMembershipObject| {
            let (org, member) = object.into_snapshots(None)?;
            Some((
                format!("{}\n{}", member.organization_id, member.user_id),
                (org, member),
            ))
        },
        |page: Vec<(OrganizationProfile, MembershipSnapshot)>| import_memberships(orgs, page),
        |walked| {
            let now = OrganizationBackfillReport {
                organizations: organizations.clone(),
                memberships: walked.clone(),
            };
            progress(&now);
        },
    )
    .await;
    Ok(OrganizationBackfillReport {
        organizations,
        memberships,
    })
}

fn import_organizations(
    store: &dyn OrganizationStore,
    page: Vec<OrganizationProfile>,
) -> StoreFuture<'_, ImportCounts> {
    Box::pin(async move { store.import_organizations(&page).await })
}

fn import_memberships(
    store: &dyn OrganizationStore,
    page: Vec<(OrganizationProfile, MembershipSnapshot)>,
) -> StoreFuture<'_, ImportCounts> {
    Box::pin(async move { store.import_memberships(&page).await })
}

/// Walks one `{data, total_count}` list oldest first, with the overlap of the module
/// documentation; `parse` gives each object's key and snapshot (`None`: skipped, counted as
/// failed).
async fn walk<'s, O, T>(
    api: &ClerkApi,
    path: &'static str,
    options: BackfillOptions,
    parse: impl Fn(O) -> Option<(String, T)>,
    write: impl Fn(Vec<T>) -> StoreFuture<'s, ImportCounts>,
    mut progress: impl FnMut(&BackfillReport),
) -> BackfillReport
where
    O: for<'de> Deserialize<'de>,
{
    let started = Instant::now();
    let limit = options.page_size.clamp(1, MAX_PAGE_SIZE);
    let overlap = u64::from((limit / 10).min(10));
    let mut report = BackfillReport {
        dry_run: options.dry_run,
        ..BackfillReport::default()
    };
    let mut offset: u64 = 0;
    let mut previous: HashSet<String> = HashSet::new();
    let mut failures_in_a_row = 0;
    loop {
        match fetch::<O>(api, path, limit, offset).await {
            Ok(objects) => {
                failures_in_a_row = 0;
                let count = objects.len() as u64;
                let mut keys = HashSet::with_capacity(objects.len());
                let mut fresh = Vec::with_capacity(objects.len());
                for object in objects {
                    match parse(object) {
                        Some((key, snapshot)) => {
                            if !previous.contains(&key) {
                                fresh.push(snapshot);
                            }
                            keys.insert(key);
                        }
                        None => report.failed += 1,
                    }
                }
                previous = keys;
                report.fetched += fresh.len() as u64;
                report.pages += 1;
                if !options.dry_run && !fresh.is_empty() {
                    let rows = fresh.len() as u64;
                    match write(fresh).await {
                        Ok(counts) => report.add(counts),
                        Err(error) => {
                            report.failed += rows;
                            report.failed_pages += 1;
                            tracing::error!(path, offset, %error, "writing a page failed");
                        }
                    }
                }
                if count < u64::from(limit) {
                    break;
                }
                offset += (count - overlap).max(1);
            }
            Err(error) => {
                failures_in_a_row += 1;
                report.failed += u64::from(limit);
                report.failed_pages += 1;
                tracing::error!(path, offset, %error, "fetching a page failed; stepping over it");
                previous.clear();
                offset += u64::from(limit);
                if failures_in_a_row >= options.max_consecutive_failures {
                    report.aborted = true;
                    tracing::error!(path, "Clerk kept failing: the walk stopped before the end");
                    break;
                }
            }
        }
        report.elapsed_ms = elapsed_ms(started.elapsed());
        progress(&report);
    }
    report.elapsed_ms = elapsed_ms(started.elapsed());
    progress(&report);
    report
}

pub(crate) async fn fetch<O>(
    api: &ClerkApi,
    path: &'static str,
    limit: u32,
    offset: u64,
) -> Result<Vec<O>, ApiError>
where
    O: for<'de> Deserialize<'de>,
{
    let url = format!("{}{path}", api.base_url());
    let (limit, offset) = (limit.to_string(), offset.to_string());
    let query = [
        ("limit", limit.as_str()),
        ("offset", offset.as_str()),
        ("order_by", "+created_at"),
    ];
    let body = api.get(path, &url, &query).await?;
    let page: Page<O> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidResponse(format!("{path}: {e}")))?;
    Ok(page.data)
}
