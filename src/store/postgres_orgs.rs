//! [`PgOrganizations`]: the `organizations` and `organization_memberships` tables in
//! PostgreSQL, behind [`crate::PgUserStore::organizations`].
//!
//! Each request-path write is one statement (unnamed, so PgBouncer's transaction mode is
//! fine); a webhook is one transaction with its delivery id; an import page is one
//! transaction.

use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use super::sql::{self, ORGANIZATION_COLUMNS, ROLE_APPLIES};
use super::{
    ImportCounts, MembershipOutcome, MembershipSnapshot, OrganizationChange, OrganizationOutcome,
    OrganizationProfile, OrganizationStore, StoreFuture, WebhookOutcome,
};

/// `$1..$4` id, slug, name, image URL; `$5` version (ms); `$6` a visit (the layer); `$7` an
/// import (write only what changes). One row back: the tier (NULL when nothing was
/// written), whether it was inserted, and whether the organization is deleted.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let columns = &ORGANIZATION_COLUMNS;
    let fields = sql::versioned_field_updates(columns);
    let any_applies = sql::any_field_applies(columns);
    let version = "to_timestamp($5::bigint / 1000.0)";
    let version_columns = sql::version_columns(columns);
    let version_values = sql::version_values(columns, |at| format!("${}::text", at + 2), version);
    let changes = sql::import_update_condition(columns, "IS DISTINCT FROM");
    format!(
        "WITH written AS ( \
             INSERT INTO organizations AS u \
                 (id, slug, name, image_url, clerk_updated_at, {version_columns}, last_seen_at) \
             VALUES ($1, $2, $3, $4, {version}, {version_values}, \
                     CASE WHEN $6::boolean THEN now() END) \
             ON CONFLICT (id) DO UPDATE SET \
                 {fields}, \
                 updated_at = CASE WHEN {any_applies} THEN now() ELSE u.updated_at END, \
                 clerk_updated_at = GREATEST(u.clerk_updated_at, excluded.clerk_updated_at), \
                 last_seen_at = CASE WHEN $6::boolean THEN now() ELSE u.last_seen_at END \
             WHERE u.deleted_at IS NULL AND (NOT $7::boolean OR {changes}) \
             RETURNING tier, (xmax = 0) AS inserted \
         ) \
         SELECT (SELECT tier FROM written) AS tier, \
                COALESCE((SELECT inserted FROM written), false) AS inserted, \
                EXISTS (SELECT 1 FROM organizations \
                        WHERE id = $1 AND deleted_at IS NOT NULL) AS deleted"
    )
});

/// `$1` organization, `$2` user, `$3` role, `$4` version (ms), `$5` an import. Written only
/// when the organization is live and the row is live or deleted by something older than the
/// snapshot (a restore counts as an update). When nothing was written (`inserted` NULL),
/// `refused` tells a live organization's deleted membership (a newer deletion stands) or an
/// organization that is not live from an import that changed nothing.
static MEMBERSHIP: LazyLock<String> = LazyLock::new(|| {
    let version = "to_timestamp($4::bigint / 1000.0)";
    format!(
        "WITH old AS ( \
             SELECT deleted_at FROM organization_memberships \
             WHERE organization_id = $1 AND user_id = $2 \
         ), written AS ( \
             INSERT INTO organization_memberships AS m \
                 (organization_id, user_id, role, role_version, clerk_updated_at) \
             SELECT $1, $2, $3::text, CASE WHEN $3::text IS NOT NULL THEN {version} END, \
                    {version} \
             FROM organizations o WHERE o.id = $1 AND o.deleted_at IS NULL \
             ON CONFLICT (organization_id, user_id) DO UPDATE SET \
                 role = CASE WHEN {ROLE_APPLIES} THEN excluded.role ELSE m.role END, \
                 role_version = CASE WHEN {ROLE_APPLIES} THEN excluded.clerk_updated_at \
                     ELSE m.role_version END, \
                 clerk_updated_at = GREATEST(m.clerk_updated_at, excluded.clerk_updated_at), \
                 deleted_at = NULL, deleted_version = NULL, updated_at = now() \
             WHERE (m.deleted_at IS NULL OR excluded.clerk_updated_at \
                        > COALESCE(m.deleted_version, '-infinity'::timestamptz)) \
               AND (NOT $5::boolean OR m.deleted_at IS NOT NULL OR ({ROLE_APPLIES} AND \
                    (excluded.role IS DISTINCT FROM m.role \
                     OR excluded.clerk_updated_at IS DISTINCT FROM m.role_version))) \
             RETURNING (xmax = 0) AS fresh \
         ) \
         SELECT (SELECT fresh FROM written) AS inserted, \
                NOT EXISTS (SELECT 1 FROM organizations WHERE id = $1 AND deleted_at IS NULL) \
                OR COALESCE((SELECT deleted_at IS NOT NULL FROM old), false) AS refused"
    )
});

/// `$1` id, `$2` version (ms): the tombstone, personal fields cleared.
static DELETE: LazyLock<String> = LazyLock::new(|| {
    let cleared = sql::cleared_fields(&ORGANIZATION_COLUMNS);
    format!(
        "INSERT INTO organizations AS u (id, clerk_updated_at, deleted_at) \
         VALUES ($1, to_timestamp($2::bigint / 1000.0), now()) \
         ON CONFLICT (id) DO UPDATE SET \
             {cleared}, updated_at = now(), \
             deleted_at = COALESCE(u.deleted_at, now()), \
             clerk_updated_at = GREATEST(u.clerk_updated_at, excluded.clerk_updated_at)"
    )
});

/// Every live membership of organization `$1` deleted at version `$2`.
const DELETE_MEMBERSHIPS: &str = "UPDATE organization_memberships SET \
         deleted_at = now(), deleted_version = to_timestamp($2::bigint / 1000.0), \
         clerk_updated_at = GREATEST(clerk_updated_at, to_timestamp($2::bigint / 1000.0)), \
         updated_at = now() \
     WHERE organization_id = $1 AND deleted_at IS NULL";

/// `$1` organization, `$2` user, `$3` version (ms): applies unless the row holds a newer
/// snapshot; a deletion without a version always applies.
const DELETE_MEMBERSHIP: &str = "INSERT INTO organization_memberships AS m \
         (organization_id, user_id, clerk_updated_at, deleted_version, deleted_at) \
     VALUES ($1, $2, to_timestamp($3::bigint / 1000.0), to_timestamp($3::bigint / 1000.0), now()) \
     ON CONFLICT (organization_id, user_id) DO UPDATE SET \
         deleted_at = COALESCE(m.deleted_at, now()), \
         deleted_version = GREATEST(m.deleted_version, excluded.deleted_version), \
         clerk_updated_at = GREATEST(m.clerk_updated_at, excluded.clerk_updated_at), \
         updated_at = now() \
     WHERE (excluded.deleted_version IS NULL OR m.clerk_updated_at IS NULL \
        OR excluded.deleted_version >= m.clerk_updated_at)";

/// The statements of a reconcile's deletion of a live organization (`$1` id, `$2` version):
/// the tombstone, only where the row is live (its row count tells), then its memberships.
pub(super) fn reconcile_organization_deletes() -> Vec<String> {
    vec![
        format!("{} WHERE u.deleted_at IS NULL", DELETE.as_str()),
        DELETE_MEMBERSHIPS.to_owned(),
    ]
}

/// The statement of a reconcile's deletion of a live membership (`$1` organization, `$2`
/// user, `$3` version).
pub(super) fn reconcile_membership_deletes() -> Vec<String> {
    vec![format!("{DELETE_MEMBERSHIP} AND m.deleted_at IS NULL")]
}

/// Records a webhook delivery id in `clerk_webhook_events` (shared by users and
/// organizations); `false` when it was recorded before (a redelivery).
pub(super) async fn record_delivery(
    conn: &mut PgConnection,
    delivery_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO clerk_webhook_events (svix_id) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .persistent(false)
    .bind(delivery_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The organization tables of a [`crate::PgUserStore`]'s database.
#[derive(Clone, Debug)]
pub(crate) struct PgOrganizations {
    pool: PgPool,
}

/// What one organization statement did.
struct Written {
    tier: Option<String>,
    inserted: bool,
    deleted: bool,
}

impl PgOrganizations {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn upsert_on(
        conn: &mut PgConnection,
        org: &OrganizationProfile,
        seen: bool,
        import: bool,
    ) -> Result<Written, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(UPSERT.as_str()))
            .persistent(false)
            .bind(&org.id)
            .bind(&org.slug)
            .bind(&org.name)
            .bind(&org.image_url)
            .bind(org.version_ms)
            .bind(seen)
            .bind(import)
            .fetch_one(conn)
            .await?;
        Ok(Written {
            tier: row.try_get("tier")?,
            inserted: row.try_get("inserted")?,
            deleted: row.try_get("deleted")?,
        })
    }

    /// `(inserted, refused)`: `inserted` is `None` when nothing was written.
    async fn membership_on(
        conn: &mut PgConnection,
        membership: &MembershipSnapshot,
        import: bool,
    ) -> Result<(Option<bool>, bool), sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(MEMBERSHIP.as_str()))
            .persistent(false)
            .bind(&membership.organization_id)
            .bind(&membership.user_id)
            .bind(&membership.role)
            .bind(membership.version_ms)
            .bind(import)
            .fetch_one(conn)
            .await?;
        Ok((row.try_get("inserted")?, row.try_get("refused")?))
    }

    async fn apply_in_transaction(
        &self,
        delivery_id: &str,
        change: &OrganizationChange,
    ) -> Result<WebhookOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !record_delivery(&mut tx, delivery_id).await? {
            tx.rollback().await?;
            return Ok(WebhookOutcome::Duplicate);
        }
        let outcome = match change {
            OrganizationChange::Upsert(org) => {
                if Self::upsert_on(&mut tx, org, false, false).await?.deleted {
                    WebhookOutcome::OrganizationDeleted
                } else {
                    WebhookOutcome::Applied
                }
            }
            OrganizationChange::Delete {
                organization_id,
                version_ms,
            } => {
                for statement in [DELETE.as_str(), DELETE_MEMBERSHIPS] {
                    sqlx::query(AssertSqlSafe(statement))
                        .persistent(false)
                        .bind(organization_id)
                        .bind(version_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                WebhookOutcome::Applied
            }
            OrganizationChange::UpsertMembership(org, membership) => {
                if Self::upsert_on(&mut tx, org, false, false).await?.deleted {
                    WebhookOutcome::OrganizationDeleted
                } else {
                    Self::membership_on(&mut tx, membership, false).await?;
                    WebhookOutcome::Applied
                }
            }
            OrganizationChange::DeleteMembership(org, membership) => {
                // The organization row first, for the foreign key (a tombstone stays one).
                Self::upsert_on(&mut tx, org, false, false).await?;
                sqlx::query(DELETE_MEMBERSHIP)
                    .persistent(false)
                    .bind(&membership.organization_id)
                    .bind(&membership.user_id)
                    .bind(membership.version_ms)
                    .execute(&mut *tx)
                    .await?;
                WebhookOutcome::Applied
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

impl OrganizationStore for PgOrganizations {
    fn ensure_organization<'a>(
        &'a self,
        organization: &'a OrganizationProfile,
    ) -> StoreFuture<'a, OrganizationOutcome> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            let written = Self::upsert_on(&mut conn, organization, true, false).await?;
            Ok(match written.tier {
                Some(tier) if !written.deleted => OrganizationOutcome::Active {
                    tier,
                    inserted: written.inserted,
                },
                _ => OrganizationOutcome::Deleted,
            })
        })
    }

    fn ensure_membership<'a>(
        &'a self,
        membership: &'a MembershipSnapshot,
    ) -> StoreFuture<'a, MembershipOutcome> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            Ok(
                match Self::membership_on(&mut conn, membership, false).await? {
                    (Some(inserted), _) => MembershipOutcome::Active { inserted },
                    (None, _) => MembershipOutcome::Refused,
                },
            )
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
                let written = Self::upsert_on(&mut tx, org, false, true).await?;
                let outcome = written.tier.map(|_| written.inserted);
                counts.record(outcome, written.deleted);
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
                Self::upsert_on(&mut tx, org, false, true).await?;
                let (written, refused) = Self::membership_on(&mut tx, membership, true).await?;
                counts.record(written, refused);
            }
            tx.commit().await?;
            Ok(counts)
        })
    }
}
