//! One reconcile of one list (users, organizations or memberships): the walk of Clerk's list
//! into the session, the comparison, and the repair.

use futures_util::TryStreamExt as _;
use serde::Deserialize;

use super::{ReconcileError, ReconcileOptions, ReconcileReport, ReconcileTarget};
use crate::clerk_api::{ApiError, ClerkApi, MAX_PAGE_SIZE, encode_path_segment};
use crate::store::organization::{ClerkMembershipObject, ClerkOrganizationObject};
use crate::store::reconcile::{Diff, Kind, ReconcileSession, Snapshot};
use crate::store::{ImportCounts, OrganizationProfile, StoreError, UserStore};

/// Rows read back from the temporary table per batch while repairing.
const APPLY_BATCH: i64 = 500;

/// Walks `kind`'s list into `session`, compares, and repairs when asked.
pub(super) async fn run(
    kind: Kind,
    api: &ClerkApi,
    target: &ReconcileTarget<'_>,
    session: &mut dyn ReconcileSession,
    options: ReconcileOptions,
) -> Result<ReconcileReport, ReconcileError> {
    let started = std::time::Instant::now();
    let walk_complete = walk(kind, api, session, options.page_size).await?;
    let walked = started.elapsed();
    let diff = diff(session).await?;
    let table_rows = diff.table_rows;
    let mut report = ReconcileReport::from_diff(diff);
    report.walk_complete = walk_complete;
    report.walk_ms = millis(walked);
    report.compare_ms = millis(started.elapsed() - walked);
    report.max_deletes = options
        .max_deletes
        .unwrap_or_else(|| (table_rows / 100).max(100));
    if !options.apply {
        return Ok(report);
    }
    if walk_complete && report.deleted_in_clerk > report.max_deletes && !options.force {
        report.deletions_refused = true;
        tracing::error!(
            list = ?kind,
            candidates = report.deleted_in_clerk,
            max_deletes = report.max_deletes,
            "reconcile refused: more rows would be deleted than allowed (is this the right \
             secret key for this database?); nothing was written"
        );
        return Ok(report);
    }
    report.applied = true;
    let store = target.store();
    let channel = store.invalidation_channel();
    // One message per changed user or organization, a batch at a time.
    let publish = |ids: Vec<String>| {
        let channel = channel.clone();
        async move {
            if let Some(channel) = channel
                && let Err(error) = channel.publish_many(&ids).await
            {
                tracing::warn!(%error, ids = ids.len(), "could not publish evictions");
            }
        }
    };

    // Missing and stale rows, in batches read back from the temporary table, with up to
    // `target.write_concurrency()` imports in flight while the next batch is read (batches
    // hold distinct keys, sorted in every statement, so concurrent ones cannot deadlock).
    {
        let start = session.sql().start();
        let batches = futures_util::stream::try_unfold(
            (&mut *session, start),
            |(session, after)| async move {
                let chunk = session.to_import(&after, APPLY_BATCH).await?;
                let Some(last) = chunk.last() else {
                    return Ok(None);
                };
                let next = last.snapshot.keys.clone();
                Ok::<_, StoreError>(Some((chunk, (session, next))))
            },
        );
        let imports = batches
            .map_ok(|chunk| {
                let mut needed = Vec::new();
                let mut stale = Vec::new();
                for row in chunk.into_iter().filter(|row| row.needed) {
                    // Existing rows may be cached by running processes; new ones not.
                    if row.existing {
                        stale.push(evicted(kind, &row.snapshot.keys).to_owned());
                    }
                    needed.push(row.snapshot);
                }
                let publish = &publish;
                async move {
                    if needed.is_empty() {
                        return Ok(ImportCounts::default());
                    }
                    let counts = import(kind, store, needed).await?;
                    if counts.updated > 0 && !stale.is_empty() {
                        publish(stale).await;
                    }
                    Ok(counts)
                }
            })
            .try_buffer_unordered(target.write_concurrency());
        let mut imports = std::pin::pin!(imports);
        while let Some(counts) = imports.try_next().await? {
            report.inserted += counts.inserted;
            report.updated += counts.updated;
        }
    }
    if !walk_complete {
        tracing::error!(list = ?kind, "the walk of Clerk's list did not complete: nothing was deleted");
        return Ok(report);
    }
    if report.deleted_in_clerk == 0 {
        // No row was a candidate, and none can become one: rows created since the walk
        // began never are.
        return Ok(report);
    }

    // Rows Clerk did not list, each confirmed one by one.
    let mut after = session.sql().start();
    loop {
        let candidates = session.deletion_candidates(&after, APPLY_BATCH).await?;
        let Some(last) = candidates.last() else { break };
        after.clone_from(last);
        for keys in candidates {
            match confirm(kind, api, &keys).await {
                Ok(None) => {
                    if session.delete(&keys).await? {
                        report.deleted += 1;
                        publish(vec![evicted(kind, &keys).to_owned()]).await;
                    }
                }
                Ok(Some(snapshot)) => {
                    // The list missed it (it changed during the walk): Clerk still has it.
                    let counts = import(kind, store, vec![snapshot]).await?;
                    report.inserted += counts.inserted;
                    report.updated += counts.updated;
                    report.still_in_clerk += 1;
                }
                Err(error) => {
                    report.unconfirmed += 1;
                    tracing::warn!(keys = ?keys, %error, "could not confirm a deletion; left alone");
                }
            }
        }
    }
    Ok(report)
}

/// Compares the table with what was added to the session.
async fn diff(session: &mut dyn ReconcileSession) -> Result<Diff, StoreError> {
    session.prepare().await?;
    let sql = session.sql();
    // One pass over both tables gives every count; examples only for the classes that
    // have rows.
    let counts = session.counts(&sql.counts).await?;
    let at = |at: usize| counts.get(at).copied().unwrap_or(0);
    let mut diff = Diff {
        listed: at(0),
        table_rows: at(1),
        missing: at(2),
        deleted_in_clerk: at(3),
        stale: at(4),
        in_sync: at(5),
        deleted_here: at(6),
        ..Diff::default()
    };
    let (snapshot_id, row_id) = (&sql.snapshot_id, &sql.row_id);
    if diff.missing > 0 {
        diff.missing_examples = session.examples(&sql.missing, snapshot_id, false).await?;
    }
    if diff.deleted_in_clerk > 0 {
        diff.deleted_in_clerk_examples = session
            .examples(&sql.deleted_in_clerk, row_id, true)
            .await?;
    }
    if diff.stale > 0 {
        diff.stale_examples = session.examples(&sql.stale, row_id, false).await?;
    }
    if diff.deleted_here > 0 {
        diff.deleted_here_examples = session.examples(&sql.deleted_here, "d.id", false).await?;
    }
    Ok(diff)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The id published when a row of `kind` changes: the user, the organization, or the
/// member (their cached sessions hold the membership).
fn evicted(kind: Kind, keys: &[String]) -> &str {
    let at = usize::from(kind == Kind::Memberships);
    keys.get(at).map_or("", String::as_str)
}

/// Writes snapshots of `kind` through the store's versioned import.
async fn import(
    kind: Kind,
    store: &dyn UserStore,
    snapshots: Vec<Snapshot>,
) -> Result<ImportCounts, StoreError> {
    let organizations = || {
        store
            .organizations()
            .ok_or(StoreError::Unsupported("organizations"))
    };
    match kind {
        Kind::Users => {
            let users: Vec<_> = snapshots.into_iter().map(Snapshot::into_user).collect();
            store.import(&users).await
        }
        Kind::Organizations => {
            let orgs: Vec<_> = snapshots
                .into_iter()
                .map(Snapshot::into_organization)
                .collect();
            organizations()?.import_organizations(&orgs).await
        }
        Kind::Memberships => {
            // The organizations were reconciled first: an id-only snapshot changes nothing.
            let memberships: Vec<_> = snapshots
                .into_iter()
                .map(|snapshot| {
                    let membership = snapshot.into_membership();
                    let org = OrganizationProfile::new(membership.organization_id.clone());
                    (org, membership)
                })
                .collect();
            organizations()?.import_memberships(&memberships).await
        }
    }
}

/// Asks Clerk for one row Clerk's list did not have: `Ok(None)` when it is gone (404, or
/// not a member), its snapshot when it exists.
async fn confirm(
    kind: Kind,
    api: &ClerkApi,
    keys: &[String],
) -> Result<Option<Snapshot>, ApiError> {
    match lookup(kind, api, keys).await {
        Err(ApiError::Rejected { status, .. }) if status == http::StatusCode::NOT_FOUND => Ok(None),
        other => other,
    }
}

/// [`confirm`]'s request; a 404 is an error here.
async fn lookup(kind: Kind, api: &ClerkApi, keys: &[String]) -> Result<Option<Snapshot>, ApiError> {
    let key = |at: usize| keys.get(at).map_or("", String::as_str);
    match kind {
        Kind::Users => api.get_user(key(0)).await.map(|user| Some(user.into())),
        Kind::Organizations => {
            let url = format!(
                "{}/v1/organizations/{}",
                api.base_url(),
                encode_path_segment(key(0))
            );
            let body = api.get("/v1/organizations/{id}", &url, &[]).await?;
            let org: ClerkOrganizationObject = serde_json::from_slice(&body)
                .map_err(|e| ApiError::InvalidResponse(format!("organization: {e}")))?;
            Ok(Some(org.into_profile().into()))
        }
        Kind::Memberships => {
            let (organization_id, user_id) = (key(0), key(1));
            let url = format!(
                "{}/v1/organizations/{}/memberships",
                api.base_url(),
                encode_path_segment(organization_id)
            );
            let query = [("user_id", user_id), ("limit", "10")];
            let body = api
                .get("/v1/organizations/{id}/memberships", &url, &query)
                .await?;
            let page: Page<ClerkMembershipObject> = serde_json::from_slice(&body)
                .map_err(|e| ApiError::InvalidResponse(format!("memberships: {e}")))?;
            Ok(page
                .data
                .into_iter()
                .filter_map(|object| object.into_snapshots(None))
                .map(|(_, membership)| membership)
                .find(|m| m.organization_id == organization_id && m.user_id == user_id)
                .map(Snapshot::from))
        }
    }
}

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
}

/// Where the next page of a walk starts.
enum Cursor {
    /// `GET /v1/users`: after this user id (none: the first page).
    After(Option<String>),
    /// The organization lists: this offset, oldest first.
    Offset(u64),
}

/// One page of `kind`'s list, and where the next one starts (`None`: this was the last).
async fn page(
    kind: Kind,
    api: &ClerkApi,
    limit: u32,
    cursor: &Cursor,
) -> Result<(Vec<Snapshot>, Option<Cursor>), ApiError> {
    let full = |count: usize| count as u64 >= u64::from(limit);
    match (kind, cursor) {
        (Kind::Users, Cursor::After(after)) => {
            let page = api.list_users(limit, after.as_deref()).await?;
            let next = page
                .last_id
                .filter(|_| full(page.users.len()))
                .map(|last| Cursor::After(Some(last)));
            Ok((page.users.into_iter().map(Snapshot::from).collect(), next))
        }
        (_, Cursor::Offset(offset)) => {
            let offset = *offset;
            let (count, snapshots) = if kind == Kind::Organizations {
                let objects: Vec<ClerkOrganizationObject> =
                    crate::backfill::organizations::fetch(api, "/v1/organizations", limit, offset)
                        .await?;
                let snapshots = objects.into_iter().map(|o| o.into_profile().into());
                (snapshots.len(), snapshots.collect::<Vec<Snapshot>>())
            } else {
                let objects: Vec<ClerkMembershipObject> = crate::backfill::organizations::fetch(
                    api,
                    "/v1/organization_memberships",
                    limit,
                    offset,
                )
                .await?;
                let count = objects.len();
                let snapshots = objects
                    .into_iter()
                    .filter_map(|object| object.into_snapshots(None))
                    .map(|(_, membership)| Snapshot::from(membership));
                (count, snapshots.collect())
            };
            // Each page starts a few rows before the previous one's end, as the backfill's
            // walk (a deletion shifts the offsets); the repeated rows are ignored.
            let overlap = u64::from((limit / 10).min(10));
            let next =
                full(count).then(|| Cursor::Offset(offset + (count as u64 - overlap).max(1)));
            Ok((snapshots, next))
        }
        (_, Cursor::After(_)) => Ok((Vec::new(), None)),
    }
}

/// Lists every row of `kind` into the session; `false` when a page failed past the retries.
/// The next page is fetched while the last one is written.
async fn walk(
    kind: Kind,
    api: &ClerkApi,
    session: &mut dyn ReconcileSession,
    page_size: u32,
) -> Result<bool, StoreError> {
    let limit = page_size.clamp(1, MAX_PAGE_SIZE);
    let (pages, mut received) = tokio::sync::mpsc::channel(2);
    let api = api.clone();
    let fetcher = tokio::spawn(async move {
        let mut cursor = match kind {
            Kind::Users => Cursor::After(None),
            Kind::Organizations | Kind::Memberships => Cursor::Offset(0),
        };
        loop {
            let (snapshots, next) = match page(kind, &api, limit, &cursor).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(list = ?kind, %error, "listing Clerk's rows failed");
                    return false;
                }
            };
            if pages.send(snapshots).await.is_err() {
                return false;
            }
            match next {
                Some(next) => cursor = next,
                None => return true,
            }
        }
    });
    while let Some(snapshots) = received.recv().await {
        if let Err(error) = session.add(&snapshots).await {
            fetcher.abort();
            return Err(error);
        }
    }
    Ok(fetcher.await.unwrap_or(false))
}
