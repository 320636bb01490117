//! [`reconcile()`]: compares Clerk's whole user list with the users table, reports the drift
//! and, when asked, repairs it.
//!
//! Clerk's ids (with their snapshots) are streamed page by page into a temporary table on one
//! connection, and SQL finds the differences: memory holds a page or two whatever the user
//! count. Repairs go through the store's own versioned rules, so they are safe beside live
//! traffic and webhooks.

use std::time::Instant;

use crate::clerk_api::{ApiError, ClerkApi, MAX_PAGE_SIZE};
use crate::store::reconcile::{Diff, ReconcileSession};
use crate::store::{StoreError, UserProfile, UserStore};

/// Rows read back from the temporary table per batch while repairing.
const APPLY_BATCH: i64 = 500;

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

    async fn session(&self) -> Result<Box<dyn ReconcileSession>, StoreError> {
        match *self {
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.reconcile_session().await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(store) => store.reconcile_session().await,
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
    /// Users Clerk listed.
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
    /// Rows soft-deleted by the repair (each confirmed with `GET /v1/users/{id}` → 404).
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
            clerk_users: diff.clerk_users,
            missing: diff.missing,
            deleted_in_clerk: diff.deleted_in_clerk,
            stale: diff.stale,
            in_sync: diff.listed_live.saturating_sub(diff.stale),
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
    let started = Instant::now();
    let target = target.into();
    let mut session = target.session().await?;
    let result = run(api, &target, session.as_mut(), options).await;
    let finished = session.finish().await;
    let mut report = result?;
    finished?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    crate::health::reconciled(&report);
    tracing::info!(
        clerk_users = report.clerk_users,
        missing = report.missing,
        deleted_in_clerk = report.deleted_in_clerk,
        stale = report.stale,
        applied = report.applied,
        "reconcile finished"
    );
    Ok(report)
}

async fn run(
    api: &ClerkApi,
    target: &ReconcileTarget<'_>,
    session: &mut dyn ReconcileSession,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    let walk_complete = walk(api, session, options.page_size).await?;
    let diff = crate::store::reconcile::diff(session).await?;
    let table_rows = diff.table_rows;
    let mut report = ReconcileReport::from_diff(diff);
    report.walk_complete = walk_complete;
    report.max_deletes = options
        .max_deletes
        .unwrap_or_else(|| (table_rows / 100).max(100));
    if !options.apply {
        return Ok(report);
    }
    if walk_complete && report.deleted_in_clerk > report.max_deletes && !options.force {
        report.deletions_refused = true;
        tracing::error!(
            candidates = report.deleted_in_clerk,
            max_deletes = report.max_deletes,
            "reconcile refused: more users would be deleted than allowed (is this the right \
             secret key for this database?); nothing was written"
        );
        return Ok(report);
    }
    report.applied = true;
    let store = target.store();
    let channel = store.invalidation_channel();
    // One message per changed user, a batch at a time.
    let publish = |ids: Vec<String>| {
        let channel = channel.clone();
        async move {
            if let Some(channel) = channel
                && let Err(error) = channel.publish_many(&ids).await
            {
                tracing::warn!(%error, users = ids.len(), "could not publish evictions");
            }
        }
    };

    // Missing and stale users, in batches read back from the temporary table.
    let mut after = String::new();
    loop {
        let chunk = session.to_import(&after, APPLY_BATCH).await?;
        let Some(last) = chunk.last() else { break };
        after.clone_from(&last.profile.id);
        let (needed, stale): (Vec<UserProfile>, Vec<String>) = chunk
            .into_iter()
            .filter(|row| row.needed)
            .fold((Vec::new(), Vec::new()), |(mut needed, mut stale), row| {
                // The stale rows' users may be cached by running processes; new rows' not.
                if row.existing {
                    stale.push(row.profile.id.clone());
                }
                needed.push(row.profile);
                (needed, stale)
            });
        if needed.is_empty() {
            continue;
        }
        let counts = store.import(&needed).await?;
        report.inserted += counts.inserted;
        report.updated += counts.updated;
        if counts.updated > 0 && !stale.is_empty() {
            publish(stale).await;
        }
    }
    if !walk_complete {
        tracing::error!("the walk of Clerk's users did not complete: nothing was deleted");
        return Ok(report);
    }

    // Users Clerk did not list, each confirmed one by one.
    let mut after = String::new();
    loop {
        let candidates = session.deletion_candidates(&after, APPLY_BATCH).await?;
        let Some(last) = candidates.last() else { break };
        after.clone_from(last);
        for id in candidates {
            match api.get_user(&id).await {
                Err(ApiError::Rejected { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                    if session.delete(&id).await? {
                        report.deleted += 1;
                        publish(vec![id]).await;
                    }
                }
                Ok(profile) => {
                    // The list missed it (it changed during the walk): Clerk still has it.
                    let counts = store.import(std::slice::from_ref(&profile)).await?;
                    report.inserted += counts.inserted;
                    report.updated += counts.updated;
                    report.still_in_clerk += 1;
                }
                Err(error) => {
                    report.unconfirmed += 1;
                    tracing::warn!(user.id = id, %error, "could not confirm a deletion; left alone");
                }
            }
        }
    }
    Ok(report)
}

/// Lists every user into the session; `false` when a page failed past the retries. The next
/// page is fetched while the last one is written.
async fn walk(
    api: &ClerkApi,
    session: &mut dyn ReconcileSession,
    page_size: u32,
) -> Result<bool, StoreError> {
    let limit = page_size.clamp(1, MAX_PAGE_SIZE);
    let (pages, mut received) = tokio::sync::mpsc::channel(2);
    let api = api.clone();
    let fetcher = tokio::spawn(async move {
        let mut cursor: Option<String> = None;
        loop {
            let page = match api.list_users(limit, cursor.as_deref()).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "listing Clerk's users failed");
                    return false;
                }
            };
            let full = page.users.len() as u64 >= u64::from(limit);
            let next = page.last_id.clone().filter(|_| full);
            if pages.send(page.users).await.is_err() {
                return false;
            }
            match next {
                Some(last) => cursor = Some(last),
                None => return true,
            }
        }
    });
    while let Some(users) = received.recv().await {
        if let Err(error) = session.add(&users).await {
            fetcher.abort();
            return Err(error);
        }
    }
    Ok(fetcher.await.unwrap_or(false))
}
