//! `backfill_organizations` and `clerk-sync backfill --organizations` against FakeClerkApi and
//! the real PostgreSQL: limit/offset paging oldest first, a deletion during the walk skips
//! nothing, a second run changes nothing, organizations deleted here stay deleted.
#![allow(clippy::unwrap_used)]

use clerk_sync::store::{OrganizationChange, UserStore};
use clerk_sync::testing::FakeClerkApi;
use clerk_sync::{BackfillOptions, PgUserStore};
use sqlx::PgPool;

fn org_id(n: usize) -> String {
    format!("org_{n:03}")
}

async fn fake_with(orgs: usize, members_per_org: usize) -> FakeClerkApi {
    let fake = FakeClerkApi::start(0).await.unwrap();
    for n in 0..orgs {
        fake.add_organization(&org_id(n), &format!("slug-{n}"), &format!("Org {n}"));
    }
    for n in 0..orgs {
        for m in 0..members_per_org {
            fake.add_membership(&org_id(n), &format!("user_{n}_{m}"), "org:member");
        }
    }
    fake
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn organizations_and_memberships_are_imported_page_by_page(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let fake = fake_with(25, 2).await;
    let store = PgUserStore::new(pool.clone());
    let options = BackfillOptions::default().page_size(10);
    let mut calls = 0;
    let report =
        clerk_sync::backfill_organizations(&fake.client(), &store, options, |_| calls += 1)
            .await
            .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(
        (report.organizations.fetched, report.organizations.inserted),
        (25, 25)
    );
    assert_eq!(
        (report.memberships.fetched, report.memberships.inserted),
        (50, 50)
    );
    assert!(calls >= 4, "progress after each page");
    // Offsets 0, 9, 18 (one row of overlap per page of 10) for 25 organizations; 0, 9, ..., 45
    // for 50 memberships.
    assert_eq!(fake.organization_list_requests(), 3 + 6);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organizations WHERE name IS NOT NULL"
        )
        .await,
        25
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organization_memberships WHERE role = 'org:member'"
        )
        .await,
        50
    );
    // Again: nothing changes.
    let again = clerk_sync::backfill_organizations(&fake.client(), &store, options, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (again.organizations.unchanged, again.organizations.inserted),
        (25, 0)
    );
    assert_eq!(
        (again.memberships.unchanged, again.memberships.updated),
        (50, 0)
    );
}

#[sqlx::test(migrations = false)]
async fn a_deletion_during_the_walk_skips_nothing_and_deleted_here_stays_deleted(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let fake = fake_with(25, 0).await;
    // Deleted here by a webhook: never revived by the backfill.
    let store = PgUserStore::new(pool.clone());
    let delete = OrganizationChange::Delete {
        organization_id: org_id(20),
        version_ms: None,
    };
    store
        .organizations()
        .unwrap()
        .apply_webhook("msg_del", &delete)
        .await
        .unwrap();
    // The third oldest organization is deleted in Clerk after the first page was read: every
    // later one moves up one position.
    fake.remove_organization_after(1, &org_id(2));
    let options = BackfillOptions::default().page_size(10);
    let report = clerk_sync::backfill_organizations(&fake.client(), &store, options, |_| {})
        .await
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.organizations.skipped_deleted, 1);
    // Read before its deletion, and every one after it, the page boundary (org_010) too.
    for n in [2, 9, 10, 11, 24] {
        let present: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1 AND deleted_at IS NULL)",
        )
        .bind(org_id(n))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(present, "{} was skipped", org_id(n));
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organizations WHERE deleted_at IS NULL"
        )
        .await,
        24
    );
}
