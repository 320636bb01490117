//! [`SqliteOrganizations`]: the `organizations` and `organization_memberships` tables in
//! SQLite, behind [`crate::SqliteUserStore`]. The rules and statements mirror
//! `postgres_orgs`; SQLite has no data-modifying `WITH`, so what a statement that wrote
//! nothing means is read after it, in its transaction.

use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};

use super::sql::{self, GREATEST_VERSION, ORGANIZATION_COLUMNS, ROLE_APPLIES, unique_now_ms};
use super::{
    ImportCounts, MembershipOutcome, MembershipSnapshot, OrganizationChange, OrganizationOutcome,
    OrganizationProfile, OrganizationStore, StoreFuture, WebhookOutcome,
};

/// `?1..?4` id, slug, name, image URL; `?5` version; `?6` a visit; `?7` an import (write only
/// what changes); `?8` now. A row back (tier, inserted) when something was written.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let columns = &ORGANIZATION_COLUMNS;
    let fields = sql::versioned_field_updates(columns);
    let any_applies = sql::any_field_applies(columns);
    let version_columns = sql::version_columns(columns);
    let version_values = sql::version_values(columns, |at| format!("?{}", at + 2), "?5");
    let changes = sql::import_update_condition(columns, "IS NOT");
    format!(
        "INSERT INTO organizations AS u \
             (id, slug, name, image_url, clerk_updated_at, {version_columns}, last_seen_at, \
              created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, {version_values}, CASE WHEN ?6 THEN ?8 END, ?8, ?8) \
         ON CONFLICT (id) DO UPDATE SET \
             {fields}, \
             updated_at = CASE WHEN {any_applies} THEN ?8 ELSE u.updated_at END, \
             clerk_updated_at = {GREATEST_VERSION}, \
             last_seen_at = CASE WHEN ?6 THEN ?8 ELSE u.last_seen_at END \
         WHERE u.deleted_at IS NULL AND (NOT ?7 OR {changes}) \
         RETURNING tier, created_at = ?8 AND updated_at = ?8 AS inserted"
    )
});

/// `?1` organization, `?2` user, `?3` role, `?4` version, `?5` an import, `?6` now.
static MEMBERSHIP: LazyLock<String> = LazyLock::new(|| {
    let newest = sql::greatest("m.clerk_updated_at", "excluded.clerk_updated_at");
    format!(
        "INSERT INTO organization_memberships AS m \
             (organization_id, user_id, role, role_version, clerk_updated_at, created_at, \
              updated_at) \
         SELECT ?1, ?2, ?3, CASE WHEN ?3 IS NOT NULL THEN ?4 END, ?4, ?6, ?6 \
         FROM organizations o WHERE o.id = ?1 AND o.deleted_at IS NULL \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET \
             role = CASE WHEN {ROLE_APPLIES} THEN excluded.role ELSE m.role END, \
             role_version = CASE WHEN {ROLE_APPLIES} THEN excluded.clerk_updated_at \
                 ELSE m.role_version END, \
             clerk_updated_at = {newest}, \
             deleted_at = NULL, deleted_version = NULL, updated_at = ?6 \
         WHERE (m.deleted_at IS NULL OR excluded.clerk_updated_at \
                    > COALESCE(m.deleted_version, -9223372036854775807)) \
           AND (NOT ?5 OR m.deleted_at IS NOT NULL OR ({ROLE_APPLIES} AND \
                (excluded.role IS NOT m.role OR excluded.clerk_updated_at IS NOT m.role_version))) \
         RETURNING created_at = ?6 AND updated_at = ?6 AS inserted"
    )
});

/// After a membership statement that wrote nothing: was it refused (organization not live,
/// or a deletion newer than the snapshot stands)?
const REFUSED: &str = "SELECT NOT EXISTS (SELECT 1 FROM organizations \
                              WHERE id = ?1 AND deleted_at IS NULL) \
            OR EXISTS (SELECT 1 FROM organization_memberships \
                       WHERE organization_id = ?1 AND user_id = ?2 AND deleted_at IS NOT NULL)";

/// `?1` id, `?2` version, `?3` now.
static DELETE: LazyLock<String> = LazyLock::new(|| {
    let cleared = sql::cleared_fields(&ORGANIZATION_COLUMNS);
    format!(
        "INSERT INTO organizations AS u (id, clerk_updated_at, deleted_at, created_at, \
             updated_at) \
         VALUES (?1, ?2, ?3, ?3, ?3) \
         ON CONFLICT (id) DO UPDATE SET \
             {cleared}, updated_at = ?3, \
             deleted_at = COALESCE(u.deleted_at, ?3), \
             clerk_updated_at = {GREATEST_VERSION}"
    )
});

static DELETE_MEMBERSHIPS: LazyLock<String> = LazyLock::new(|| {
    let newest = sql::greatest("clerk_updated_at", "?2");
    format!(
        "UPDATE organization_memberships SET \
             deleted_at = ?3, deleted_version = ?2, clerk_updated_at = {newest}, updated_at = ?3 \
         WHERE organization_id = ?1 AND deleted_at IS NULL"
    )
});

/// `?1` organization, `?2` user, `?3` version, `?4` now.
static DELETE_MEMBERSHIP: LazyLock<String> = LazyLock::new(|| {
    let newest = sql::greatest("m.clerk_updated_at", "excluded.clerk_updated_at");
    let newest_deletion = sql::greatest("m.deleted_version", "excluded.deleted_version");
    format!(
        "INSERT INTO organization_memberships AS m \
             (organization_id, user_id, clerk_updated_at, deleted_version, deleted_at, \
              created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?3, ?4, ?4, ?4) \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET \
             deleted_at = COALESCE(m.deleted_at, ?4), \
             deleted_version = {newest_deletion}, \
             clerk_updated_at = {newest}, \
             updated_at = ?4 \
         WHERE (excluded.deleted_version IS NULL OR m.clerk_updated_at IS NULL \
            OR excluded.deleted_version >= m.clerk_updated_at)"
    )
});

/// The statements of a reconcile's deletion of a live organization (`?1` id, `?2` version,
/// `?3` now):
/// the tombstone, only where the row is live (its row count tells), then its memberships.
pub(super) fn reconcile_organization_deletes() -> Vec<String> {
    vec![
        format!("{} WHERE u.deleted_at IS NULL", DELETE.as_str()),
        DELETE_MEMBERSHIPS.clone(),
    ]
}

/// The statement of a reconcile's deletion of a live membership (`?1` organization, `?2`
/// user, `?3` version, `?4` now).
pub(super) fn reconcile_membership_deletes() -> Vec<String> {
    vec![format!(
        "{} AND m.deleted_at IS NULL",
        DELETE_MEMBERSHIP.as_str()
    )]
}

/// Records a webhook delivery id (shared by users and organizations); `false` when it was
/// recorded before. A write first in its transaction, so the transaction takes the write lock
/// at once (no read-to-write upgrade, which SQLite refuses under contention).
pub(super) async fn record_delivery(
    conn: &mut SqliteConnection,
    delivery_id: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT OR IGNORE INTO clerk_webhook_events (svix_id, received_at) VALUES (?1, ?2)",
    )
    .bind(delivery_id)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The organization tables of a [`crate::SqliteUserStore`]'s database.
#[derive(Clone, Debug)]
pub(crate) struct SqliteOrganizations {
    pool: SqlitePool,
}

/// `Some((tier, inserted))` when the statement wrote.
async fn upsert_on(
    conn: &mut SqliteConnection,
    org: &OrganizationProfile,
    seen: bool,
    import: bool,
) -> Result<Option<(String, bool)>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(UPSERT.as_str()))
        .bind(&org.id)
        .bind(&org.slug)
        .bind(&org.name)
        .bind(&org.image_url)
        .bind(org.version_ms)
        .bind(seen)
        .bind(import)
        .bind(unique_now_ms())
        .fetch_optional(conn)
        .await?;
    row.map(|row| Ok((row.try_get("tier")?, row.try_get("inserted")?)))
        .transpose()
}

async fn is_deleted(conn: &mut SqliteConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = ?1 AND deleted_at IS NOT NULL)",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// `Some(inserted)` when the statement wrote.
async fn membership_on(
    conn: &mut SqliteConnection,
    membership: &MembershipSnapshot,
    import: bool,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(MEMBERSHIP.as_str()))
        .bind(&membership.organization_id)
        .bind(&membership.user_id)
        .bind(&membership.role)
        .bind(membership.version_ms)
        .bind(import)
        .bind(unique_now_ms())
        .fetch_optional(conn)
        .await
}

async fn refused(
    conn: &mut SqliteConnection,
    membership: &MembershipSnapshot,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(REFUSED)
        .bind(&membership.organization_id)
        .bind(&membership.user_id)
        .fetch_one(conn)
        .await
}

impl SqliteOrganizations {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    async fn apply_in_transaction(
        &self,
        delivery_id: &str,
        change: &OrganizationChange,
    ) -> Result<WebhookOutcome, sqlx::Error> {
        let now = unique_now_ms();
        let mut tx = self.pool.begin().await?;
        if !record_delivery(&mut tx, delivery_id, now).await? {
            tx.rollback().await?;
            return Ok(WebhookOutcome::Duplicate);
        }
        let outcome = match change {
            OrganizationChange::Upsert(org) => {
                if upsert_on(&mut tx, org, false, false).await?.is_none() {
                    WebhookOutcome::OrganizationDeleted
                } else {
                    WebhookOutcome::Applied
                }
            }
            OrganizationChange::Delete {
                organization_id,
                version_ms,
            } => {
                for statement in [DELETE.as_str(), DELETE_MEMBERSHIPS.as_str()] {
                    sqlx::query(AssertSqlSafe(statement))
                        .bind(organization_id)
                        .bind(version_ms)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                WebhookOutcome::Applied
            }
            OrganizationChange::UpsertMembership(org, membership) => {
                if upsert_on(&mut tx, org, false, false).await?.is_none() {
                    WebhookOutcome::OrganizationDeleted
                } else {
                    membership_on(&mut tx, membership, false).await?;
                    WebhookOutcome::Applied
                }
            }
            OrganizationChange::DeleteMembership(org, membership) => {
                upsert_on(&mut tx, org, false, false).await?;
                sqlx::query(AssertSqlSafe(DELETE_MEMBERSHIP.as_str()))
                    .bind(&membership.organization_id)
                    .bind(&membership.user_id)
                    .bind(membership.version_ms)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                WebhookOutcome::Applied
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

impl OrganizationStore for SqliteOrganizations {
    fn ensure_organization<'a>(
        &'a self,
        organization: &'a OrganizationProfile,
    ) -> StoreFuture<'a, OrganizationOutcome> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            Ok(
                match upsert_on(&mut conn, organization, true, false).await? {
                    Some((tier, inserted)) => OrganizationOutcome::Active { tier, inserted },
                    None => OrganizationOutcome::Deleted,
                },
            )
        })
    }

    fn ensure_membership<'a>(
        &'a self,
        membership: &'a MembershipSnapshot,
    ) -> StoreFuture<'a, MembershipOutcome> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            Ok(match membership_on(&mut conn, membership, false).await? {
                Some(inserted) => MembershipOutcome::Active { inserted },
                None => MembershipOutcome::Refused,
            })
        })
    }

    fn apply_webhook<'a>(
        &'a self,
        delivery_id: &'a str,
        change: &'a OrganizationChange,
    ) -> StoreFuture<'a, WebhookOutcome> {
        Box::pin(async move { Ok(self.apply_in_transaction(delivery_id, change).await?) })
    }

    fn import_organizations<'a>(
        &'a self,
        organizations: &'a [OrganizationProfile],
    ) -> StoreFuture<'a, ImportCounts> {
        Box::pin(async move {
            let mut counts = ImportCounts::default();
            let mut tx = self.pool.begin().await?;
            for org in organizations {
                let written = upsert_on(&mut tx, org, false, true).await?;
                let deleted = written.is_none() && is_deleted(&mut tx, &org.id).await?;
                counts.record(written.map(|(_, inserted)| inserted), deleted);
            }
            tx.commit().await?;
            Ok(counts)
        })
    }

    fn import_memberships<'a>(
        &'a self,
        memberships: &'a [(OrganizationProfile, MembershipSnapshot)],
    ) -> StoreFuture<'a, ImportCounts> {
        Box::pin(async move {
            let mut counts = ImportCounts::default();
            let mut tx = self.pool.begin().await?;
            for (org, membership) in memberships {
                upsert_on(&mut tx, org, false, true).await?;
                let written = membership_on(&mut tx, membership, true).await?;
                let refused = written.is_none() && refused(&mut tx, membership).await?;
                counts.record(written, refused);
            }
            tx.commit().await?;
            Ok(counts)
        })
    }
}
