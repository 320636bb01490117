//! [`reconcile()`]: compares Clerk's whole user list with the users table, reports the drift
//! and, when asked, repairs it; [`reconcile_organizations()`] does the same for the
//! organization and membership lists.
//!
//! Clerk's ids (with their snapshots) are streamed page by page into a temporary table on one
//! connection, and one SQL statement classifies every row: memory holds a page or two whatever
//! the row count. Repairs go through the store's own versioned rules, so they are safe beside live
//! traffic and webhooks.

use std::time::Instant;

use crate::clerk_api::{ClerkApi, MAX_PAGE_SIZE};
use crate::store::reconcile::{Diff, Kind, ReconcileSession};
use crate::store::{StoreError, UserStore};

mod run;

/// The store a reconcile compares: PostgreSQL or SQLite (the memory store has nothing to
/// drift). Made from a reference to either store.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ReconcileTarget<'a> {
    /// A [`crate::PgUserStore`]; give it a pool on a **direct** connection string: the
    /// temporary table lives in one session, which a transaction-mode pooler does not keep.
    #[cfg(feature = "postgres")]
    Postgres(&'a crate::PgUserStore),
    /// A [`crate::SqliteUserStore`].
    #[cfg(feature = "sqlite")]
    Sqlite(&'a crate::SqliteUserStore),
}

#[cfg(feature = "postgres")]
impl<'a> From<&'a crate::PgUserStore> for ReconcileTarget<'a> {
    fn from(store: &'a crate::PgUserStore) -> Self {
        Self::Postgres(store)
    }
}

#[cfg(feature = "sqlite")]
impl<'a> From<&'a crate::SqliteUserStore> for ReconcileTarget<'a> {
    fn from(store: &'a crate::SqliteUserStore) -> Self {
        Self::Sqlite(store)
    }
}

impl ReconcileTarget<'_> {
    fn store(&self) -> &dyn UserStore {
        match *self {
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(store) => store,
        }
    }

    /// Repair batches written at once: PostgreSQL takes several on their own connections;
    /// SQLite has one writer.
    fn write_concurrency(&self) -> usize {
        match *self {
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => 4,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => 1,
        }
    }

    async fn session(&self, kind: Kind) -> Result<Box<dyn ReconcileSession>, StoreError> {
        match *self {
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.reconcile_session(kind).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(store) => store.reconcile_session(kind).await,
        }
    }
}

/// Options of one [`reconcile()`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileOptions {
    /// Repair the drift (`--apply`). Default: `false`, a dry run that writes nothing.
    pub apply: bool,
    /// Most users a run may delete; `None`: the larger of 100 and 1% of the table.
    pub max_deletes: Option<u64>,
    /// Delete even more than [`max_deletes`](Self::max_deletes) (`--force`).
    pub force: bool,
    /// Users per `GET /v1/users` page, 1–500. Default: 500.
    pub page_size: u32,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self {
            apply: false,
            max_deletes: None,
            force: false,
            page_size: MAX_PAGE_SIZE,
        }
    }
}

impl ReconcileOptions {
    /// Repair what the comparison finds.
    pub fn apply(mut self, apply: bool) -> Self {
        self.apply = apply;
        self
    }

    /// The most users one run may delete without [`force`](Self::force).
    pub fn max_deletes(mut self, max: u64) -> Self {
        self.max_deletes = Some(max);
        self
    }

    /// Allow more deletions than the maximum.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Users per page (clamped to 1–500).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self
    }
}

/// Up to 10 ids of each class, smallest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DriftExamples {
    /// In Clerk, not here.
    pub missing: Vec<String>,
    /// Live here, not listed by Clerk.
    pub deleted_in_clerk: Vec<String>,
    /// Clerk's snapshot would change the row.
    pub stale: Vec<String>,
    /// Deleted here, still listed by Clerk (never revived).
    pub deleted_here: Vec<String>,
}

/// What a [`reconcile()`] run found and did. The counts describe the table *before* any
/// repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Users Clerk listed (in an [`OrganizationReconcileReport`]: organizations, or
    /// memberships).
    pub clerk_users: u64,
    /// In Clerk, no row here.
    pub missing: u64,
    /// Live rows (that existed before the walk began) that Clerk did not list. Only
    /// meaningful when [`walk_complete`](Self::walk_complete).
    pub deleted_in_clerk: u64,
    /// Live rows that applying Clerk's snapshot under the versioned rules would change.
    pub stale: u64,
    /// Live rows that match Clerk.
    pub in_sync: u64,
    /// Rows deleted here that Clerk still lists: reported, never revived.
    pub deleted_here: u64,
    /// Rows in the table (deleted ones included) when the comparison ran.
    pub table_rows: u64,
    /// `false` when listing Clerk's users failed past the client's retries: nothing is
    /// deleted, and `deleted_in_clerk` counts users that were simply not reached.
    pub walk_complete: bool,
    /// Whether the repair ran.
    pub applied: bool,
    /// The deletion limit of this run.
    pub max_deletes: u64,
    /// `true` when more rows would have been deleted than `max_deletes` allows without
    /// `force`: nothing was written.
    pub deletions_refused: bool,
    /// Rows inserted by the repair.
    pub inserted: u64,
    /// Rows updated by the repair.
    pub updated: u64,
    /// Rows soft-deleted by the repair (each confirmed with Clerk first: `GET /v1/users/{id}`
    /// → 404, or the organization's or membership's lookup).
    pub deleted: u64,
    /// Deletion candidates that Clerk still knows (`GET /v1/users/{id}` answered): imported
    /// instead of deleted.
    pub still_in_clerk: u64,
    /// Deletion candidates whose check failed (not 404, not found): left alone.
    pub unconfirmed: u64,
    /// Example ids of each class.
    pub examples: DriftExamples,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
    /// Of [`elapsed_ms`](Self::elapsed_ms): the walk of Clerk's list into the temporary
    /// table.
    pub walk_ms: u64,
    /// Of [`elapsed_ms`](Self::elapsed_ms): the comparison (the counts and examples). The
    /// rest is the repair.
    pub compare_ms: u64,
}

impl ReconcileReport {
    /// `true` when the table differed from Clerk (missing, deleted in Clerk or stale rows).
    pub fn has_drift(&self) -> bool {
        self.missing + self.deleted_in_clerk + self.stale > 0
    }

    /// `true` when the walk completed, nothing was refused, and (after a repair) every
    /// deletion candidate was settled.
    pub fn is_success(&self) -> bool {
        self.walk_complete && !self.deletions_refused && self.unconfirmed == 0
    }

    /// Clerk users compared per second.
    pub fn users_per_second(&self) -> f64 {
        if self.elapsed_ms == 0 {
            return 0.0;
        }
        self.clerk_users as f64 * 1000.0 / self.elapsed_ms as f64
    }

    fn from_diff(diff: Diff) -> Self {
        Self {
            clerk_users: diff.listed,
            missing: diff.missing,
            deleted_in_clerk: diff.deleted_in_clerk,
            stale: diff.stale,
            in_sync: diff.in_sync,
            deleted_here: diff.deleted_here,
            table_rows: diff.table_rows,
            examples: DriftExamples {
                missing: diff.missing_examples,
                deleted_in_clerk: diff.deleted_in_clerk_examples,
                stale: diff.stale_examples,
                deleted_here: diff.deleted_here_examples,
            },
            ..Self::default()
        }
    }
}

/// A failure that stopped a [`reconcile()`] before it could report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// Compares every user Clerk lists (`GET /v1/users`, cursor-paged) with `store`'s table and
/// reports each class of drift; with [`ReconcileOptions::apply`], repairs it:
///
/// - **missing** users are inserted and **stale** rows updated through the store's import
///   (versioned per field: a row newer than Clerk's snapshot keeps its fields);
/// - users **deleted in Clerk** are soft-deleted as `user.deleted` does, each only after
///   `GET /v1/users/{id}` answers 404 (one that answers is imported instead). Only rows that
///   existed before the walk began are candidates, nothing is deleted when the walk did not
///   complete, and more candidates than the maximum refuse the whole repair (nothing written)
///   unless [`ReconcileOptions::force`];
/// - rows **deleted here** that Clerk still lists are reported and never revived.
///
/// Repaired and deleted users are published on the store's invalidation channel (Postgres:
/// `NOTIFY`), so running processes evict them. Memory stays flat: one page of Clerk's list,
/// or one batch of rows, at a time.
pub async fn reconcile<'a>(
    api: &ClerkApi,
    target: impl Into<ReconcileTarget<'a>>,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    let report = reconcile_list(Kind::Users, api, &target.into(), options).await?;
    crate::health::reconciled(report.is_success(), drift(&report), report.applied);
    Ok(report)
}

/// What [`reconcile_organizations`] found and did: one report per list, in which "users" are
/// organizations, and memberships (`clerk_users` counts what Clerk listed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct OrganizationReconcileReport {
    /// `GET /v1/organizations` against the `organizations` table.
    pub organizations: ReconcileReport,
    /// `GET /v1/organization_memberships` against `organization_memberships`; example ids
    /// are `<organization id>/<user id>`.
    pub memberships: ReconcileReport,
}

impl OrganizationReconcileReport {
    /// `true` when either list differed from Clerk.
    pub fn has_drift(&self) -> bool {
        self.organizations.has_drift() || self.memberships.has_drift()
    }

    /// `true` when both reconciles succeeded (see [`ReconcileReport::is_success`]).
    pub fn is_success(&self) -> bool {
        self.organizations.is_success() && self.memberships.is_success()
    }
}

/// [`reconcile()`] for organizations, then memberships, with the same classes, guards and
/// options (each list has its own deletion limit, by default the larger of 100 and 1% of its
/// table):
///
/// - organizations are compared field by field under the versioned rules; one Clerk no
///   longer has (`GET /v1/organizations/{id}` → 404) is deleted as `organization.deleted`
///   does, its memberships with it;
/// - a membership is stale when its role would change, or when it is deleted here by
///   something older than Clerk's snapshot (the import restores it, as a re-invitation
///   does); one Clerk no longer has (`GET /v1/organizations/{id}/memberships?user_id=…`
///   does not list it) is deleted as `organizationMembership.deleted` does. Memberships of
///   organizations deleted here are reported as deleted here, never written.
///
/// Both lists are paged by offset, oldest first, as
/// [`backfill_organizations`](crate::backfill::backfill_organizations) walks them; a row the
/// walk skipped (a deletion shifted the pages) is a deletion candidate whose check finds it
/// and imports it instead. Evictions: the organization, or the member.
pub async fn reconcile_organizations<'a>(
    api: &ClerkApi,
    target: impl Into<ReconcileTarget<'a>>,
    options: ReconcileOptions,
) -> Result<OrganizationReconcileReport, ReconcileError> {
    let target = target.into();
    let report = OrganizationReconcileReport {
        organizations: reconcile_list(Kind::Organizations, api, &target, options).await?,
        memberships: reconcile_list(Kind::Memberships, api, &target, options).await?,
    };
    let drift = drift(&report.organizations) + drift(&report.memberships);
    let applied = report.organizations.applied || report.memberships.applied;
    crate::health::reconciled(report.is_success(), drift, applied);
    Ok(report)
}

fn drift(report: &ReconcileReport) -> u64 {
    report.missing + report.deleted_in_clerk + report.stale
}

/// One list's reconcile on a session of its own.
async fn reconcile_list(
    kind: Kind,
    api: &ClerkApi,
    target: &ReconcileTarget<'_>,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    let started = Instant::now();
    let mut session = target.session(kind).await?;
    let result = run::run(kind, api, target, session.as_mut(), options).await;
    let finished = session.finish().await;
    let mut report = result?;
    finished?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        list = ?kind,
        listed = report.clerk_users,
        missing = report.missing,
        deleted_in_clerk = report.deleted_in_clerk,
        stale = report.stale,
        applied = report.applied,
        "reconcile finished"
    );
    Ok(report)
}
