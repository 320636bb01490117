//! [`backfill`]: imports every Clerk user through the Backend API into a [`UserStore`].
//!
//! Pages are fetched ahead by one task while earlier pages are written, through a bounded
//! channel, so memory holds a few pages whatever the user count. Each page is one
//! [`UserStore::import`] call (one statement on PostgreSQL); a few pages are written at once
//! on separate connections, so the database's round-trip latency is overlapped instead of
//! paid page after page.

pub(crate) mod organizations;

pub use organizations::{OrganizationBackfillReport, backfill_organizations};

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::clerk_api::{ApiError, ClerkApi, MAX_PAGE_SIZE};
use crate::store::{ImportCounts, UserProfile, UserStore};

/// Options of one [`backfill`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackfillOptions {
    /// Users per `GET /v1/users` page, 1–500. Default: 500 (Clerk's maximum: fewest requests
    /// against the Backend API's rate limit).
    pub page_size: u32,
    /// Pages fetched ahead of the writers. Default: 2.
    pub prefetch_pages: usize,
    /// Pages written at the same time, each on its own pooled connection. Default: 4.
    /// Memory holds at most `prefetch_pages + write_concurrency + 1` pages.
    pub write_concurrency: usize,
    /// Fetch and parse everything, write nothing. Default: `false`.
    pub dry_run: bool,
    /// Pages that failed in a row (after the client's own retries) before the walk gives up:
    /// Clerk is then taken to be down. Default: 3.
    pub max_consecutive_failures: u32,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        Self {
            page_size: MAX_PAGE_SIZE,
            prefetch_pages: 2,
            write_concurrency: 4,
            dry_run: false,
            max_consecutive_failures: 3,
        }
    }
}

impl BackfillOptions {
    /// Users per page (clamped to 1–500).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// Pages written at the same time (at least 1).
    pub fn write_concurrency(mut self, pages: usize) -> Self {
        self.write_concurrency = pages.max(1);
        self
    }

    /// Fetch and parse, write nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// What a [`backfill`] run did; also passed to the progress callback after each page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BackfillReport {
    /// Users read from Clerk.
    pub fetched: u64,
    /// New rows.
    pub inserted: u64,
    /// Rows changed by a newer snapshot.
    pub updated: u64,
    /// Rows already up to date, or newer than Clerk's snapshot (never overwritten).
    pub unchanged: u64,
    /// Users whose row is deleted: skipped, never revived.
    pub skipped_deleted: u64,
    /// Users that could not be imported: those of a page that could not be written, plus a
    /// full page (`page_size`) for each page that could not be fetched.
    pub failed: u64,
    /// Pages written (or, in a dry run, fetched).
    pub pages: u64,
    /// Pages that could not be fetched or written.
    pub failed_pages: u64,
    /// `true` when the walk stopped early because Clerk kept failing: users after that point
    /// were not seen.
    pub aborted: bool,
    /// `true` for a dry run: nothing was written and the write counts are 0.
    pub dry_run: bool,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

impl BackfillReport {
    /// `true` when every user was imported (nothing failed, nothing left unseen).
    pub fn is_success(&self) -> bool {
        self.failed == 0 && !self.aborted
    }

    /// Users per second over the run.
    pub fn users_per_second(&self) -> f64 {
        if self.elapsed_ms == 0 {
            return 0.0;
        }
        self.fetched as f64 * 1000.0 / self.elapsed_ms as f64
    }

    fn add(&mut self, counts: ImportCounts) {
        self.inserted += counts.inserted;
        self.updated += counts.updated;
        self.unchanged += counts.unchanged;
        self.skipped_deleted += counts.deleted;
    }
}

enum Fetched {
    Page(Vec<UserProfile>),
    Failed { position: u64, error: ApiError },
    Aborted,
}

/// Imports every user of the Clerk instance behind `api` into `store`, newest first, and
/// calls `progress` after each page.
///
/// Pages are walked with Clerk's `starting_after` cursor. A page that still fails after the
/// client's retries is counted as failed and stepped over with one `offset` request (a cursor
/// needs the failed page's last id), after which the cursor walk resumes; after
/// [`BackfillOptions::max_consecutive_failures`] failed pages in a row the walk stops and the
/// report says `aborted`. Store failures count the page's users as failed and the run goes
/// on. Older snapshots never overwrite newer rows and deleted users stay deleted
/// ([`UserStore::import`]).
///
/// Users created while the walk runs may be missed (the list is newest first); the layer
/// syncs them on their first request anyway.
pub async fn backfill(
    api: &ClerkApi,
    store: &dyn UserStore,
    options: BackfillOptions,
    mut progress: impl FnMut(&BackfillReport),
) -> BackfillReport {
    let started = Instant::now();
    let options = BackfillOptions {
        page_size: options.page_size.clamp(1, MAX_PAGE_SIZE),
        prefetch_pages: options.prefetch_pages.max(1),
        write_concurrency: options.write_concurrency.max(1),
        ..options
    };
    let (sender, mut pages) = mpsc::channel(options.prefetch_pages);
    let fetcher = tokio::spawn(fetch_pages(api.clone(), options, sender));

    let mut report = BackfillReport {
        dry_run: options.dry_run,
        ..BackfillReport::default()
    };
    let mut writes = FuturesUnordered::new();
    let mut fetching = true;
    loop {
        tokio::select! {
            fetched = pages.recv(), if fetching && writes.len() < options.write_concurrency => {
                match fetched {
                    None => fetching = false,
                    Some(Fetched::Page(users)) => {
                        report.fetched += users.len() as u64;
                        if options.dry_run || users.is_empty() {
                            report.pages += u64::from(!users.is_empty());
                        } else {
                            writes.push(async move {
                                let result = store.import(&users).await;
                                (users.len() as u64, result)
                            });
                        }
                    }
                    Some(Fetched::Failed { position, error }) => {
                        report.failed += u64::from(options.page_size);
                        report.failed_pages += 1;
                        tracing::error!(position, %error, "fetching a page failed; stepping over it");
                    }
                    Some(Fetched::Aborted) => {
                        report.aborted = true;
                        tracing::error!("Clerk kept failing: the backfill stopped before the end");
                    }
                }
            }
            Some((users, result)) = writes.next(), if !writes.is_empty() => match result {
                Ok(counts) => {
                    report.pages += 1;
                    report.add(counts);
                }
                Err(error) => {
                    report.failed += users;
                    report.failed_pages += 1;
                    tracing::error!(users, %error, "writing a page failed");
                }
            },
            else => break,
        }
        report.elapsed_ms = elapsed_ms(started.elapsed());
        progress(&report);
    }
    if let Err(error) = fetcher.await {
        report.aborted = true;
        tracing::error!(%error, "the page fetcher stopped unexpectedly");
    }
    report.elapsed_ms = elapsed_ms(started.elapsed());
    report
}

fn elapsed_ms(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

async fn fetch_pages(api: ClerkApi, options: BackfillOptions, pages: mpsc::Sender<Fetched>) {
    let limit = options.page_size;
    let mut cursor: Option<String> = None;
    let mut position: u64 = 0;
    let mut failures_in_a_row = 0;
    loop {
        let result = match (&cursor, position) {
            (Some(after), _) => api.list_users(limit, Some(after)).await,
            (None, 0) => api.list_users(limit, None).await,
            // Right after a failed page: the cursor is lost, step over it by position.
            (None, at) => api.list_users_at_offset(limit, at).await,
        };
        let message = match result {
            Ok(page) => {
                failures_in_a_row = 0;
                let count = page.users.len() as u64;
                position += count;
                cursor = page.last_id;
                let last = count < u64::from(limit);
                if pages.send(Fetched::Page(page.users)).await.is_err() || last {
                    return;
                }
                continue;
            }
            Err(error) => {
                failures_in_a_row += 1;
                let failed_at = position;
                position += u64::from(limit);
                cursor = None;
                Fetched::Failed {
                    position: failed_at,
                    error,
                }
            }
        };
        if pages.send(message).await.is_err() {
            return;
        }
        if failures_in_a_row >= options.max_consecutive_failures {
            let _ = pages.send(Fetched::Aborted).await;
            return;
        }
    }
}
