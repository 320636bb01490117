//! `reconcile_organizations`: seeded drift of every class in organizations and memberships
//! against `FakeClerkApi`, on the real PostgreSQL and on SQLite; then the repair, a second
//! clean run, a walk that fails midway, the deletion limit and a row the list missed.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clerk_sync::backfill::BackfillOptions;
use clerk_sync::clerk_api::RetryPolicy;
use clerk_sync::reconcile::ReconcileTarget;
use clerk_sync::store::{
    MembershipSnapshot, OrganizationChange, OrganizationProfile, OrganizationStore, UserStore,
};
use clerk_sync::testing::{FakeClerkApi, Fault};
use clerk_sync::{
    ClerkApi, OrganizationReconcileReport, PgUserStore, ReconcileOptions, SqliteUserStore,
};
use sqlx::PgPool;

const NEWER: i64 = 1_900_000_000_000;

fn api(fake: &FakeClerkApi) -> ClerkApi {
    fake.client().with_retry(RetryPolicy::new(
        0,
        Duration::from_millis(10),
        Duration::from_millis(10),
    ))
}

enum Db {
    Postgres(PgUserStore, PgPool),
    Sqlite(SqliteUserStore, #[allow(dead_code)] tempfile::TempDir),
}

impl Db {
    fn store(&self) -> &dyn UserStore {
        match self {
            Self::Postgres(store, _) => store,
            Self::Sqlite(store, _) => store,
        }
    }

    fn orgs(&self) -> &dyn OrganizationStore {
        self.store().organizations().unwrap()
    }

    fn target(&self) -> ReconcileTarget<'_> {
        match self {
            Self::Postgres(store, _) => store.into(),
            Self::Sqlite(store, _) => store.into(),
        }
    }

    async fn run(&self, api: &ClerkApi, options: ReconcileOptions) -> OrganizationReconcileReport {
        clerk_sync::reconcile_organizations(api, self.target(), options)
            .await
            .unwrap()
    }

    /// Runs a statement; `pg` and `sqlite` are its two dialects.
    async fn exec(&self, pg: &str, sqlite: &str) {
        match self {
            Self::Postgres(_, pool) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(pg))
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Self::Sqlite(store, _) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite))
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
        }
    }

    async fn texts(&self, sql: &str) -> Vec<String> {
        match self {
            Self::Postgres(_, pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .unwrap(),
            Self::Sqlite(store, _) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(store.pool())
                .await
                .unwrap(),
        }
    }

    /// Every row of both tables, every column that matters, as text.
    async fn snapshot(&self) -> Vec<String> {
        let mut rows = self
            .texts(
                "SELECT id || '|' || COALESCE(name, '-') || '|' || COALESCE(slug, '-') || '|' \
                 || COALESCE(CAST(deleted_at AS TEXT), 'live') || '|' || CAST(updated_at AS TEXT) \
                 FROM organizations ORDER BY id",
            )
            .await;
        rows.extend(self.memberships().await);
        rows
    }

    /// `org/user role live|deleted` of every membership.
    async fn memberships(&self) -> Vec<String> {
        self.texts(
            "SELECT organization_id || '/' || user_id || ' ' || COALESCE(role, '-') || ' ' || \
             CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END \
             FROM organization_memberships ORDER BY organization_id, user_id",
        )
        .await
    }
}

async fn postgres(pool: PgPool) -> Db {
    clerk_sync::migrate(&pool).await.unwrap();
    Db::Postgres(PgUserStore::new(pool.clone()), pool)
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reconcile_orgs.db");
    let store = SqliteUserStore::open(path.to_str().unwrap()).await.unwrap();
    Db::Sqlite(store, dir)
}

/// Clerk: organizations a, b, c, d; memberships a/1 (admin), a/2, a/5, b/1, b/6, c/3, d/4.
async fn fake() -> FakeClerkApi {
    let fake = FakeClerkApi::start(0).await.unwrap();
    for org in ["a", "b", "c", "d"] {
        fake.add_organization(&format!("org_{org}"), org, &format!("Org {org}"));
    }
    for (org, user, role) in [
        ("a", "1", "org:admin"),
        ("a", "2", "org:member"),
        ("b", "1", "org:member"),
        ("b", "6", "org:member"),
        ("c", "3", "org:member"),
        ("d", "4", "org:member"),
        ("a", "5", "org:member"),
    ] {
        fake.add_membership(&format!("org_{org}"), &format!("user_{user}"), role);
    }
    fake
}

/// Everything imported, then drift of every class:
/// organizations — c missing, b stale (older name), d deleted here, org_gone unknown to
/// Clerk (with a member); memberships — a/2 and c/3 missing, b/1 stale (older role), a/5
/// deleted here by something older than Clerk's snapshot (restorable: stale), b/6 deleted
/// here by something newer, d/4 of an organization deleted here, a/user_gone and
/// org_gone/user_9 unknown to Clerk.
async fn seed(db: &Db, fake: &FakeClerkApi) {
    let options = BackfillOptions::default();
    let backfill = clerk_sync::backfill_organizations(&api(fake), db.store(), options, |_| {})
        .await
        .unwrap();
    assert!(backfill.is_success());
    db.exec(
        "DELETE FROM organization_memberships WHERE organization_id = 'org_c' \
            OR (organization_id = 'org_a' AND user_id = 'user_2'); \
         DELETE FROM organizations WHERE id = 'org_c'; \
         UPDATE organizations SET name = 'Old B', name_version = name_version - interval '1 minute' \
            WHERE id = 'org_b'; \
         UPDATE organization_memberships SET role = 'org:admin', \
            role_version = role_version - interval '1 minute' \
            WHERE organization_id = 'org_b' AND user_id = 'user_1'; \
         UPDATE organization_memberships SET deleted_at = now(), \
            deleted_version = role_version - interval '1 minute' \
            WHERE organization_id = 'org_a' AND user_id = 'user_5'",
        "DELETE FROM organization_memberships WHERE organization_id = 'org_c' \
            OR (organization_id = 'org_a' AND user_id = 'user_2'); \
         DELETE FROM organizations WHERE id = 'org_c'; \
         UPDATE organizations SET name = 'Old B', name_version = name_version - 60000 \
            WHERE id = 'org_b'; \
         UPDATE organization_memberships SET role = 'org:admin', \
            role_version = role_version - 60000 \
            WHERE organization_id = 'org_b' AND user_id = 'user_1'; \
         UPDATE organization_memberships SET deleted_at = 1, \
            deleted_version = role_version - 60000 \
            WHERE organization_id = 'org_a' AND user_id = 'user_5'",
    )
    .await;
    let orgs = db.orgs();
    let b6 = OrganizationChange::DeleteMembership(
        OrganizationProfile::new("org_b"),
        MembershipSnapshot::new("org_b", "user_6", None, Some(NEWER)),
    );
    orgs.apply_webhook("msg_b6", &b6).await.unwrap();
    let d = OrganizationChange::Delete {
        organization_id: "org_d".into(),
        version_ms: Some(NEWER),
    };
    orgs.apply_webhook("msg_d", &d).await.unwrap();
    orgs.ensure_organization(&OrganizationProfile::new("org_gone"))
        .await
        .unwrap();
    for (org, user) in [("org_gone", "user_9"), ("org_a", "user_gone")] {
        let member = MembershipSnapshot::new(org, user, Some("org:member".into()), Some(1));
        orgs.ensure_membership(&member).await.unwrap();
    }
    // The walk's start is taken on the database's clock, in milliseconds.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// `(listed, missing, deleted_in_clerk, stale, in_sync, deleted_here)`.
fn classes(report: &clerk_sync::ReconcileReport) -> (u64, u64, u64, u64, u64, u64) {
    (
        report.clerk_users,
        report.missing,
        report.deleted_in_clerk,
        report.stale,
        report.in_sync,
        report.deleted_here,
    )
}

async fn every_class_is_reported_then_repaired(db: Db) {
    let fake = fake().await;
    seed(&db, &fake).await;
    let api = api(&fake);
    let before = db.snapshot().await;

    let dry = db.run(&api, ReconcileOptions::default()).await;
    assert!(dry.is_success() && dry.has_drift() && !dry.organizations.applied);
    assert_eq!(classes(&dry.organizations), (4, 1, 1, 1, 1, 1));
    assert_eq!(dry.organizations.examples.missing, ["org_c"]);
    assert_eq!(dry.organizations.examples.stale, ["org_b"]);
    assert_eq!(dry.organizations.examples.deleted_in_clerk, ["org_gone"]);
    assert_eq!(dry.organizations.examples.deleted_here, ["org_d"]);
    assert_eq!(classes(&dry.memberships), (7, 2, 2, 2, 1, 2));
    let m = &dry.memberships.examples;
    assert_eq!(m.missing, ["org_a/user_2", "org_c/user_3"]);
    assert_eq!(m.stale, ["org_a/user_5", "org_b/user_1"]);
    assert_eq!(m.deleted_in_clerk, ["org_a/user_gone", "org_gone/user_9"]);
    assert_eq!(m.deleted_here, ["org_b/user_6", "org_d/user_4"]);
    assert_eq!(db.snapshot().await, before, "a dry run writes nothing");

    let applied = db.run(&api, ReconcileOptions::default().apply(true)).await;
    assert!(applied.is_success(), "{applied:#?}");
    let o = &applied.organizations;
    assert_eq!(
        (o.inserted, o.updated, o.deleted, o.still_in_clerk),
        (1, 1, 1, 0)
    );
    // The memberships are compared after the organizations' repair: org_gone's member went
    // with it.
    let m = &applied.memberships;
    assert_eq!(classes(m), (7, 2, 1, 2, 1, 2));
    assert_eq!(
        (m.inserted, m.updated, m.deleted, m.unconfirmed),
        (2, 2, 1, 0)
    );
    assert_eq!(
        db.memberships().await,
        [
            "org_a/user_1 org:admin live",
            "org_a/user_2 org:member live",
            "org_a/user_5 org:member live",
            "org_a/user_gone org:member deleted",
            "org_b/user_1 org:member live",
            "org_b/user_6 org:member deleted",
            "org_c/user_3 org:member live",
            "org_d/user_4 org:member deleted",
            "org_gone/user_9 org:member deleted",
        ]
    );
    let orgs = db
        .texts(
            "SELECT id || ' ' || COALESCE(name, '-') || ' ' || \
             CASE WHEN deleted_at IS NULL THEN 'live' ELSE 'deleted' END \
             FROM organizations ORDER BY id",
        )
        .await;
    assert_eq!(
        orgs,
        [
            "org_a Org a live",
            "org_b Org b live",
            "org_c Org c live",
            "org_d - deleted",
            "org_gone - deleted"
        ]
    );

    let again = db.run(&api, ReconcileOptions::default().apply(true)).await;
    assert!(!again.has_drift(), "{again:#?}");
    assert_eq!(classes(&again.organizations), (4, 0, 0, 0, 3, 1));
    assert_eq!(classes(&again.memberships), (7, 0, 0, 0, 5, 2));
    let snapshot = db.snapshot().await;
    db.run(&api, ReconcileOptions::default().apply(true)).await;
    assert_eq!(db.snapshot().await, snapshot, "a clean run writes nothing");
}

#[sqlx::test(migrations = false)]
async fn postgres_organization_drift_is_reported_then_repaired(pool: PgPool) {
    every_class_is_reported_then_repaired(postgres(pool).await).await;
}

#[tokio::test]
async fn sqlite_organization_drift_is_reported_then_repaired() {
    every_class_is_reported_then_repaired(sqlite().await).await;
}

#[sqlx::test(migrations = false)]
async fn a_failed_walk_and_the_deletion_limit_delete_nothing(pool: PgPool) {
    let db = postgres(pool).await;
    let fake = fake().await;
    seed(&db, &fake).await;
    let api = api(&fake);
    // Pages of 2: the page at offset 2 of both lists keeps failing.
    fake.fail_page_at(2, Fault::ServerError(502));
    let report = db
        .run(&api, ReconcileOptions::default().page_size(2).apply(true))
        .await;
    for list in [&report.organizations, &report.memberships] {
        assert!(!list.walk_complete && !list.is_success(), "{list:#?}");
        assert_eq!((list.clerk_users, list.deleted), (2, 0));
    }
    let live = db
        .texts("SELECT id FROM organizations WHERE deleted_at IS NULL ORDER BY id")
        .await;
    assert_eq!(live, ["org_a", "org_b", "org_gone"], "nothing deleted");

    // Complete walks, but no deletion allowed: refused, nothing written.
    let fake = self::fake().await;
    let api = self::api(&fake);
    let before = db.snapshot().await;
    let refused = db
        .run(&api, ReconcileOptions::default().apply(true).max_deletes(0))
        .await;
    for list in [&refused.organizations, &refused.memberships] {
        assert!(list.deletions_refused && !list.applied, "{list:#?}");
    }
    assert_eq!(db.snapshot().await, before);
}

#[sqlx::test(migrations = false)]
async fn an_organization_the_list_missed_is_imported_not_deleted(pool: PgPool) {
    let db = postgres(pool).await;
    let fake = fake().await;
    seed(&db, &fake).await;
    // The list leaves org_a out; GET /v1/organizations/org_a still finds it.
    fake.hide_organization_from_lists("org_a");
    let api = api(&fake);
    let report = db.run(&api, ReconcileOptions::default().apply(true)).await;
    let o = &report.organizations;
    assert_eq!(
        (o.deleted_in_clerk, o.deleted, o.still_in_clerk),
        (2, 1, 1),
        "{o:#?}"
    );
    let live = db
        .texts("SELECT id FROM organizations WHERE deleted_at IS NULL ORDER BY id")
        .await;
    assert_eq!(live, ["org_a", "org_b", "org_c"]);
}
