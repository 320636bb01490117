//! The `OrganizationStore` behaviour suite, written once and run against PostgreSQL, SQLite
//! and the memory store: versioned organization fields, tombstones never resurrected,
//! memberships deleted and restored by version, an organization's deletion taking its
//! memberships with it, deliveries applied once, and import counts.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use clerk_sync::store::{
    MembershipOutcome, MembershipSnapshot, OrganizationChange, OrganizationOutcome,
    OrganizationProfile, OrganizationStore, UserStore, WebhookOutcome,
};
use clerk_sync::{MemoryUserStore, PgUserStore, SqliteUserStore};
use sqlx::{PgPool, SqlitePool};
use tempfile::TempDir;

enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool, #[allow(dead_code)] TempDir),
    Memory(MemoryUserStore),
}

/// An organization row as every backend reports it: slug, name, tier, deleted.
type OrgRow = (Option<String>, Option<String>, String, bool);
/// A membership row: role, deleted.
type MemberRow = (Option<String>, bool);

impl Db {
    async fn postgres(pool: PgPool) -> Self {
        clerk_sync::migrate(&pool).await.unwrap();
        Self::Postgres(pool)
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orgs.db");
        let store = SqliteUserStore::open(path.to_str().unwrap()).await.unwrap();
        Self::Sqlite(store.pool().clone(), dir)
    }

    fn users(&self) -> Arc<dyn UserStore> {
        match self {
            Self::Postgres(pool) => Arc::new(PgUserStore::new(pool.clone())),
            Self::Sqlite(pool, _) => Arc::new(SqliteUserStore::new(pool.clone())),
            Self::Memory(store) => Arc::new(store.clone()),
        }
    }

    async fn org(&self, id: &str) -> Option<OrgRow> {
        const SQL: &str =
            "SELECT slug, name, tier, deleted_at IS NOT NULL FROM organizations WHERE id = $1";
        match self {
            Self::Memory(store) => store
                .organization(id)
                .map(|org| (org.slug, org.name, org.tier, org.deleted)),
            Self::Postgres(pool) => sqlx::query_as(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap(),
            Self::Sqlite(pool, _) => sqlx::query_as(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap(),
        }
    }

    async fn member(&self, org: &str, user: &str) -> Option<MemberRow> {
        const SQL: &str = "SELECT role, deleted_at IS NOT NULL FROM organization_memberships \
                           WHERE organization_id = $1 AND user_id = $2";
        match self {
            Self::Memory(store) => store.membership(org, user).map(|m| (m.role, m.deleted)),
            Self::Postgres(pool) => sqlx::query_as(SQL)
                .bind(org)
                .bind(user)
                .fetch_optional(pool)
                .await
                .unwrap(),
            Self::Sqlite(pool, _) => sqlx::query_as(SQL)
                .bind(org)
                .bind(user)
                .fetch_optional(pool)
                .await
                .unwrap(),
        }
    }
}

fn org(
    id: &str,
    slug: Option<&str>,
    name: Option<&str>,
    version_ms: Option<i64>,
) -> OrganizationProfile {
    let mut org = OrganizationProfile::new(id);
    org.slug = slug.map(str::to_owned);
    org.name = name.map(str::to_owned);
    org.version_ms = version_ms;
    org
}

fn member(
    org: &str,
    user: &str,
    role: Option<&str>,
    version_ms: Option<i64>,
) -> MembershipSnapshot {
    MembershipSnapshot::new(org, user, role.map(str::to_owned), version_ms)
}

fn orgs(users: &Arc<dyn UserStore>) -> &dyn OrganizationStore {
    users
        .organizations()
        .expect("the store keeps organizations")
}

async fn organization_fields_are_versioned_and_the_tier_set_on_insert(db: &Db) {
    let users = db.users();
    let store = orgs(&users);
    let first = store
        .ensure_organization(&org("org_1", Some("acme"), None, Some(10)))
        .await
        .unwrap();
    assert!(
        matches!(first, OrganizationOutcome::Active { ref tier, inserted: true } if tier == "free")
    );
    // Older: the slug stays; a name arrives with a newer webhook; NULL never erases.
    let again = store
        .ensure_organization(&org("org_1", Some("old-acme"), None, Some(5)))
        .await
        .unwrap();
    assert!(matches!(
        again,
        OrganizationOutcome::Active {
            inserted: false,
            ..
        }
    ));
    let change = OrganizationChange::Upsert(org("org_1", None, Some("Acme Inc"), Some(20)));
    assert_eq!(
        store.apply_webhook("msg_1", &change).await.unwrap(),
        WebhookOutcome::Applied
    );
    assert_eq!(
        db.org("org_1").await.unwrap(),
        (
            Some("acme".into()),
            Some("Acme Inc".into()),
            "free".into(),
            false
        )
    );
    // A redelivery changes nothing, even with other content.
    let other = OrganizationChange::Upsert(org("org_1", Some("x"), Some("x"), Some(99)));
    assert_eq!(
        store.apply_webhook("msg_1", &other).await.unwrap(),
        WebhookOutcome::Duplicate
    );
    assert_eq!(db.org("org_1").await.unwrap().0.as_deref(), Some("acme"));
}

async fn deleted_organizations_are_never_resurrected(db: &Db) {
    let users = db.users();
    let store = orgs(&users);
    store
        .ensure_organization(&org("org_1", Some("acme"), None, Some(10)))
        .await
        .unwrap();
    store
        .ensure_membership(&member("org_1", "user_1", Some("org:admin"), Some(10)))
        .await
        .unwrap();
    let delete = OrganizationChange::Delete {
        organization_id: "org_1".into(),
        version_ms: Some(20),
    };
    assert_eq!(
        store.apply_webhook("msg_del", &delete).await.unwrap(),
        WebhookOutcome::Applied
    );
    assert_eq!(
        db.org("org_1").await.unwrap(),
        (None, None, "free".into(), true)
    );
    assert!(db.member("org_1", "user_1").await.unwrap().1);
    // Neither a token nor a newer webhook brings it (or its memberships) back.
    assert_eq!(
        store
            .ensure_organization(&org("org_1", Some("acme"), None, Some(30)))
            .await
            .unwrap(),
        OrganizationOutcome::Deleted
    );
    assert_eq!(
        store
            .ensure_membership(&member("org_1", "user_1", Some("org:admin"), Some(30)))
            .await
            .unwrap(),
        MembershipOutcome::Refused
    );
    let late = OrganizationChange::Upsert(org("org_1", Some("acme"), Some("Acme"), Some(40)));
    assert_eq!(
        store.apply_webhook("msg_late", &late).await.unwrap(),
        WebhookOutcome::OrganizationDeleted
    );
    let rejoin = OrganizationChange::UpsertMembership(
        org("org_1", None, None, Some(40)),
        member("org_1", "user_1", Some("org:member"), Some(40)),
    );
    assert_eq!(
        store.apply_webhook("msg_rejoin", &rejoin).await.unwrap(),
        WebhookOutcome::OrganizationDeleted
    );
    assert!(db.org("org_1").await.unwrap().3);
    assert_eq!(
        db.member("org_1", "user_1").await.unwrap(),
        (Some("org:admin".into()), true)
    );
    // A deletion of an unknown organization leaves a tombstone.
    let unknown = OrganizationChange::Delete {
        organization_id: "org_2".into(),
        version_ms: None,
    };
    store.apply_webhook("msg_del2", &unknown).await.unwrap();
    assert_eq!(
        store
            .ensure_organization(&org("org_2", Some("b"), None, Some(1)))
            .await
            .unwrap(),
        OrganizationOutcome::Deleted
    );
}

async fn memberships_are_deleted_and_restored_by_version(db: &Db) {
    let users = db.users();
    let store = orgs(&users);
    store
        .ensure_organization(&org("org_1", None, None, Some(10)))
        .await
        .unwrap();
    assert_eq!(
        store
            .ensure_membership(&member("org_1", "user_1", Some("org:admin"), Some(10)))
            .await
            .unwrap(),
        MembershipOutcome::Active { inserted: true }
    );
    // An older role never overwrites a newer one.
    store
        .ensure_membership(&member("org_1", "user_1", Some("org:member"), Some(5)))
        .await
        .unwrap();
    assert_eq!(
        db.member("org_1", "user_1").await.unwrap(),
        (Some("org:admin".into()), false)
    );
    let removed = OrganizationChange::DeleteMembership(
        org("org_1", None, None, Some(10)),
        member("org_1", "user_1", None, Some(20)),
    );
    store.apply_webhook("msg_rm", &removed).await.unwrap();
    // A token issued before the removal writes nothing.
    assert_eq!(
        store
            .ensure_membership(&member("org_1", "user_1", Some("org:admin"), Some(15)))
            .await
            .unwrap(),
        MembershipOutcome::Refused
    );
    // ... and one at the same millisecond neither.
    assert_eq!(
        store
            .ensure_membership(&member("org_1", "user_1", Some("org:admin"), Some(20)))
            .await
            .unwrap(),
        MembershipOutcome::Refused
    );
    assert!(db.member("org_1", "user_1").await.unwrap().1);
    // A re-invitation (created, newer than the removal) restores it, with its role.
    let back = OrganizationChange::UpsertMembership(
        org("org_1", None, None, Some(10)),
        member("org_1", "user_1", Some("org:member"), Some(30)),
    );
    assert_eq!(
        store.apply_webhook("msg_back", &back).await.unwrap(),
        WebhookOutcome::Applied
    );
    assert_eq!(
        db.member("org_1", "user_1").await.unwrap(),
        (Some("org:member".into()), false)
    );
    // The old removal, delivered late under another id, does not undo the re-invitation.
    let stale = OrganizationChange::DeleteMembership(
        org("org_1", None, None, Some(10)),
        member("org_1", "user_1", None, Some(25)),
    );
    store.apply_webhook("msg_rm_late", &stale).await.unwrap();
    assert!(!db.member("org_1", "user_1").await.unwrap().1);
    // Removed again, then a token newer than that removal restores it too.
    let again = OrganizationChange::DeleteMembership(
        org("org_1", None, None, Some(10)),
        member("org_1", "user_1", None, Some(40)),
    );
    store.apply_webhook("msg_rm2", &again).await.unwrap();
    assert_eq!(
        store
            .ensure_membership(&member("org_1", "user_1", Some("org:admin"), Some(41)))
            .await
            .unwrap(),
        MembershipOutcome::Active { inserted: false }
    );
    assert_eq!(
        db.member("org_1", "user_1").await.unwrap(),
        (Some("org:admin".into()), false)
    );
}

async fn a_removal_before_the_creation_event_is_a_tombstone(db: &Db) {
    let users = db.users();
    let store = orgs(&users);
    // Deliveries out of order: the removal (t=20) first, of an unknown organization.
    let removed = OrganizationChange::DeleteMembership(
        org("org_9", Some("nine"), Some("Nine"), Some(5)),
        member("org_9", "user_1", Some("org:member"), Some(20)),
    );
    store.apply_webhook("msg_a", &removed).await.unwrap();
    let created = OrganizationChange::UpsertMembership(
        org("org_9", Some("nine"), Some("Nine"), Some(5)),
        member("org_9", "user_1", Some("org:member"), Some(10)),
    );
    assert_eq!(
        store.apply_webhook("msg_b", &created).await.unwrap(),
        WebhookOutcome::Applied
    );
    assert!(db.member("org_9", "user_1").await.unwrap().1);
    assert_eq!(
        db.org("org_9").await.unwrap(),
        (
            Some("nine".into()),
            Some("Nine".into()),
            "free".into(),
            false
        )
    );
}

async fn imports_count_what_they_change(db: &Db) {
    let users = db.users();
    let store = orgs(&users);
    let page = [
        org("org_1", Some("a"), Some("A"), Some(10)),
        org("org_2", Some("b"), Some("B"), Some(10)),
    ];
    let counts = store.import_organizations(&page).await.unwrap();
    assert_eq!((counts.inserted, counts.unchanged), (2, 0));
    let counts = store.import_organizations(&page).await.unwrap();
    assert_eq!(
        (counts.inserted, counts.updated, counts.unchanged),
        (0, 0, 2)
    );
    let delete = OrganizationChange::Delete {
        organization_id: "org_2".into(),
        version_ms: Some(20),
    };
    store.apply_webhook("msg_del", &delete).await.unwrap();
    let newer = [
        org("org_1", Some("a"), Some("A2"), Some(30)),
        org("org_2", Some("b"), Some("B2"), Some(30)),
    ];
    let counts = store.import_organizations(&newer).await.unwrap();
    assert_eq!((counts.updated, counts.deleted), (1, 1));
    assert_eq!(db.org("org_1").await.unwrap().1.as_deref(), Some("A2"));

    let members = [
        (
            newer[0].clone(),
            member("org_1", "user_1", Some("org:admin"), Some(30)),
        ),
        (
            newer[1].clone(),
            member("org_2", "user_1", Some("org:admin"), Some(30)),
        ),
    ];
    let counts = store.import_memberships(&members).await.unwrap();
    assert_eq!(
        (
            counts.inserted,
            counts.updated,
            counts.unchanged,
            counts.deleted
        ),
        (1, 0, 0, 1)
    );
    let counts = store.import_memberships(&members[..1]).await.unwrap();
    assert_eq!(counts.unchanged, 1);
    assert_eq!(db.member("org_2", "user_1").await, None);
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            use super::*;
            $(
                #[sqlx::test(migrations = false)]
                async fn $name(pool: PgPool) {
                    super::$name(&Db::postgres(pool).await).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&Db::sqlite().await).await;
                }
            )*
        }
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&Db::Memory(MemoryUserStore::new())).await;
                }
            )*
        }
    };
}

on_every_backend!(
    organization_fields_are_versioned_and_the_tier_set_on_insert,
    deleted_organizations_are_never_resurrected,
    memberships_are_deleted_and_restored_by_version,
    a_removal_before_the_creation_event_is_a_tombstone,
    imports_count_what_they_change,
);
