//! Organizations synced by the layer and by webhooks, against the real PostgreSQL: the rows
//! exist before the handler, concurrent first requests share one organization write, a
//! membership removed by a webhook evicts the member's cached session, a deleted organization
//! leaves its sessions without one, and nothing is written for them.
#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clerk_sync::authz::Check;
use clerk_sync::testing::{DevIssuer, signed_webhook_request};
use clerk_sync::{ClerkSync, ClerkUser, PgUserStore};
use common::{Reply, WEBHOOK_PATH, WEBHOOK_SECRET, clerk, error_code, get_with_token, send};
use http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinSet;

/// `/org` reads the organization and membership rows back: a 200 with them proves they
/// existed before the handler ran. `/invoices` is guarded by `org:invoices:read`.
async fn org_rows(State(pool): State<PgPool>, user: ClerkUser) -> Json<Value> {
    let org_id = user.organization().map(|org| org.id.clone());
    let row: Option<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT o.tier, o.slug, m.role FROM organizations o \
         JOIN organization_memberships m ON m.organization_id = o.id \
         WHERE o.id = $1 AND m.user_id = $2 AND o.deleted_at IS NULL AND m.deleted_at IS NULL",
    )
    .bind(&org_id)
    .bind(user.user_id())
    .fetch_optional(&pool)
    .await
    .unwrap();
    Json(json!({
        "org_id": org_id,
        "org_tier": user.organization_tier(),
        "row": row.map(|(tier, slug, role)| json!({"tier": tier, "slug": slug, "role": role})),
        "can_read": user.has(Check::permission("org:invoices:read")),
    }))
}

fn app(clerk: &ClerkSync, pool: PgPool) -> Router {
    Router::new()
        .route("/org", get(org_rows))
        .route(
            "/invoices",
            get(|| async { "invoices" })
                .layer(clerk.require(Check::permission("org:invoices:read"))),
        )
        .layer(clerk.layer())
        .with_state(pool)
        .merge(clerk.webhook_router(WEBHOOK_PATH).unwrap())
}

async fn setup(pool: &PgPool) -> (DevIssuer, ClerkSync, Router) {
    clerk_sync::migrate(pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(pool.clone()), |b| b);
    let router = app(&clerk, pool.clone());
    (issuer, clerk, router)
}

fn member_token(issuer: &DevIssuer, user: &str, org: &str, iat: i64) -> String {
    issuer
        .token_for(user)
        .claim("v", 2)
        .organization(org, &format!("{org}-slug"), "admin", &["org:invoices:read"])
        .issued_at(iat)
        .build()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

async fn deliver(router: &Router, id: &str, body: &Value) -> Reply {
    let request = signed_webhook_request(WEBHOOK_PATH, WEBHOOK_SECRET, id, &body.to_string());
    send(router, request.unwrap()).await
}

fn organization_object(id: &str, slug: &str, name: &str, updated_at_ms: i64) -> Value {
    json!({
        "object": "organization", "id": id, "name": name, "slug": slug,
        "image_url": "https://img.clerk.com/x", "has_image": false,
        "max_allowed_memberships": 5, "admin_delete_enabled": true, "public_metadata": {},
        "created_at": 1716883200000_i64, "updated_at": updated_at_ms
    })
}

fn membership_event(kind: &str, org: &str, user: &str, role: &str, at_ms: i64) -> Value {
    json!({
        "type": kind, "object": "event", "timestamp": at_ms / 1000,
        "data": {
            "object": "organization_membership", "id": format!("orgmem_{user}"), "role": role,
            "permissions": [], "public_metadata": {}, "created_at": 1716883200000_i64,
            "updated_at": at_ms,
            "organization": organization_object(org, "acme", "Acme", 1716883200000),
            "public_user_data": {"user_id": user, "first_name": null, "last_name": null,
                                 "profile_image_url": "", "image_url": "", "has_image": false}
        }
    })
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn organization_and_membership_rows_exist_before_the_handler(pool: PgPool) {
    let (issuer, clerk, router) = setup(&pool).await;
    let token = member_token(&issuer, "user_ada", "org_acme", now());
    let reply = get_with_token(&router, "/org", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["row"],
        json!({"tier": "free", "slug": "org_acme-slug", "role": "org:admin"})
    );
    assert_eq!(reply.body["org_tier"], "free");
    assert_eq!(reply.body["can_read"], true);
    // A new token of the same member in the same cache lifetime writes nothing more.
    let later = member_token(&issuer, "user_ada", "org_acme", now() + 1);
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&later))
            .await
            .status,
        StatusCode::OK
    );
    let stats = clerk.stats();
    assert_eq!((stats.organization_writes, stats.membership_writes), (1, 1));
    // The organization's tier, changed by the app and invalidated, reaches the session.
    sqlx::query("UPDATE organizations SET tier = 'team' WHERE id = 'org_acme'")
        .execute(&pool)
        .await
        .unwrap();
    clerk.invalidate("org_acme").await.unwrap();
    let reply = get_with_token(&router, "/org", Some(&later)).await;
    assert_eq!(reply.body["org_tier"], "team");
    // A session without an organization writes no organization row.
    get_with_token(&router, "/org", Some(&issuer.token("user_bo"))).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM organizations").await, 1);
}

#[sqlx::test(migrations = false)]
async fn concurrent_first_requests_share_one_write_per_organization(pool: PgPool) {
    let (issuer, clerk, router) = setup(&pool).await;
    let iat = now();
    let mut requests = JoinSet::new();
    for n in 0..200 {
        let token = member_token(
            &issuer,
            &format!("user_{n}"),
            &format!("org_{}", n % 10),
            iat,
        );
        let router = router.clone();
        requests.spawn(async move { get_with_token(&router, "/invoices", Some(&token)).await });
    }
    while let Some(reply) = requests.join_next().await {
        assert_eq!(reply.unwrap().status, StatusCode::OK);
    }
    let stats = clerk.stats();
    assert_eq!(stats.organization_writes, 10, "one write per organization");
    assert_eq!(stats.membership_writes, 200, "one per member");
    assert_eq!(count(&pool, "SELECT count(*) FROM organizations").await, 10);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM organization_memberships").await,
        200
    );
}

#[sqlx::test(migrations = false)]
async fn a_removed_membership_evicts_the_cached_session(pool: PgPool) {
    let (issuer, clerk, router) = setup(&pool).await;
    let iat = now() - 5;
    let token = member_token(&issuer, "user_ada", "org_acme", iat);
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&token))
            .await
            .status,
        StatusCode::OK
    );
    // Removed in Clerk after the token was issued.
    let removed = membership_event(
        "organizationMembership.deleted",
        "org_acme",
        "user_ada",
        "org:admin",
        (iat + 2) * 1000,
    );
    let reply = deliver(&router, "msg_rm", &removed).await;
    assert_eq!(reply.body["status"], "applied");
    // The same token, cached a moment ago, no longer carries the organization.
    let reply = get_with_token(&router, "/invoices", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "organization_required");
    let reply = get_with_token(&router, "/org", Some(&token)).await;
    assert_eq!(reply.body["org_id"], Value::Null);
    assert_eq!(reply.body["can_read"], false);
    // ... and wrote nothing: the membership stays deleted.
    let deleted: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NOT NULL FROM organization_memberships WHERE user_id = 'user_ada'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(deleted);
    // Re-invited: a token issued after the removal restores the membership.
    let fresh = member_token(&issuer, "user_ada", "org_acme", iat + 4);
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&fresh))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organization_memberships WHERE deleted_at IS NULL"
        )
        .await,
        1
    );
    // A redelivery of the removal is a no-op.
    let again = deliver(&router, "msg_rm", &removed).await;
    assert_eq!(again.body["status"], "duplicate");
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&fresh))
            .await
            .status,
        StatusCode::OK
    );
    let _ = clerk;
}

#[sqlx::test(migrations = false)]
async fn organization_webhooks_out_of_order_and_a_deleted_organization(pool: PgPool) {
    let (issuer, _clerk, router) = setup(&pool).await;
    let updated = json!({"type": "organization.updated", "object": "event", "timestamp": 1716883300,
                         "data": organization_object("org_acme", "acme", "Acme 2", 1716883300000)});
    let created = json!({"type": "organization.created", "object": "event", "timestamp": 1716883200,
                         "data": organization_object("org_acme", "acme-old", "Acme", 1716883200000)});
    // The update arrives first; the older creation then changes nothing.
    assert_eq!(
        deliver(&router, "msg_u", &updated).await.body["status"],
        "applied"
    );
    assert_eq!(
        deliver(&router, "msg_c", &created).await.body["status"],
        "applied"
    );
    assert_eq!(
        deliver(&router, "msg_c", &created).await.body["status"],
        "duplicate"
    );
    let (slug, name): (String, String) =
        sqlx::query_as("SELECT slug, name FROM organizations WHERE id = 'org_acme'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((slug.as_str(), name.as_str()), ("acme", "Acme 2"));

    let token = member_token(&issuer, "user_ada", "org_acme", now());
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&token))
            .await
            .status,
        StatusCode::OK
    );
    let deleted = json!({"type": "organization.deleted", "object": "event", "timestamp": now(),
                         "data": {"object": "organization", "id": "org_acme", "deleted": true}});
    assert_eq!(
        deliver(&router, "msg_d", &deleted).await.body["status"],
        "applied"
    );
    // The cached session loses its organization; a new token of it too, and nothing is
    // written for either.
    let reply = get_with_token(&router, "/invoices", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "organization_required");
    let newer = member_token(&issuer, "user_ada", "org_acme", now() + 1);
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&newer))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organization_memberships WHERE deleted_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organizations WHERE deleted_at IS NULL OR slug IS NOT NULL"
        )
        .await,
        0
    );
    // A membership event without a user id is refused (Svix retries it) and writes nothing.
    let mut broken = membership_event(
        "organizationMembership.created",
        "org_new",
        "user_x",
        "org:member",
        now() * 1000,
    );
    broken["data"]["public_user_data"] = json!({"first_name": "X"});
    let reply = deliver(&router, "msg_broken", &broken).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&reply), "malformed_webhook");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM organizations WHERE id = 'org_new'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM clerk_webhook_events WHERE svix_id = 'msg_broken'"
        )
        .await,
        0
    );
    // A late update cannot bring it back.
    let late = json!({"type": "organization.updated", "object": "event", "timestamp": now() + 10,
                      "data": organization_object("org_acme", "acme", "Back", (now() + 10) * 1000)});
    assert_eq!(
        deliver(&router, "msg_late", &late).await.body["status"],
        "organization_deleted"
    );
}

/// A user store that keeps no organizations (its `organizations()` is the default `None`).
struct UsersOnly(PgUserStore);

impl clerk_sync::store::UserStore for UsersOnly {
    fn upsert<'a>(
        &'a self,
        profile: &'a clerk_sync::store::UserProfile,
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::UpsertOutcome> {
        self.0.upsert(profile)
    }

    fn invalidation_channel(
        &self,
    ) -> Option<std::sync::Arc<dyn clerk_sync::store::InvalidationChannel>> {
        None
    }
}

#[sqlx::test(migrations = false)]
async fn a_store_without_organizations_trusts_the_claims_and_writes_none(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, UsersOnly(PgUserStore::new(pool.clone())), |b| b);
    let router = app(&clerk, pool.clone());
    let token = member_token(&issuer, "user_ada", "org_acme", now());
    assert_eq!(
        get_with_token(&router, "/invoices", Some(&token))
            .await
            .status,
        StatusCode::OK
    );
    let reply = get_with_token(&router, "/org", Some(&token)).await;
    assert_eq!(reply.body["org_id"], "org_acme");
    assert_eq!(reply.body["org_tier"], Value::Null);
    assert_eq!(count(&pool, "SELECT count(*) FROM organizations").await, 0);
    assert_eq!(clerk.stats().organization_writes, 0);
    // Its organization webhooks are acknowledged and ignored.
    let created = json!({"type": "organization.created", "object": "event", "timestamp": now(),
                         "data": organization_object("org_acme", "acme", "Acme", now() * 1000)});
    assert_eq!(
        deliver(&router, "msg_c", &created).await.body["status"],
        "ignored"
    );
}

/// Users in memory; an organization store whose every write fails (a database outage).
struct OrgsDown {
    users: clerk_sync::MemoryUserStore,
    orgs: FailingOrgs,
}

struct FailingOrgs;

fn down<'a, T: Send + 'a>() -> clerk_sync::store::StoreFuture<'a, T> {
    Box::pin(async {
        Err(clerk_sync::store::StoreError::Other(
            "connection refused".into(),
        ))
    })
}

impl clerk_sync::store::OrganizationStore for FailingOrgs {
    fn ensure_organization<'a>(
        &'a self,
        _: &'a clerk_sync::store::OrganizationProfile,
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::OrganizationOutcome> {
        down()
    }

    fn ensure_membership<'a>(
        &'a self,
        _: &'a clerk_sync::store::MembershipSnapshot,
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::MembershipOutcome> {
        down()
    }

    fn apply_webhook<'a>(
        &'a self,
        _: &'a str,
        _: &'a clerk_sync::store::OrganizationChange,
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::WebhookOutcome> {
        down()
    }

    fn import_organizations<'a>(
        &'a self,
        _: &'a [clerk_sync::store::OrganizationProfile],
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::ImportCounts> {
        down()
    }

    fn import_memberships<'a>(
        &'a self,
        _: &'a [(
            clerk_sync::store::OrganizationProfile,
            clerk_sync::store::MembershipSnapshot,
        )],
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::ImportCounts> {
        down()
    }
}

impl clerk_sync::store::UserStore for OrgsDown {
    fn upsert<'a>(
        &'a self,
        profile: &'a clerk_sync::store::UserProfile,
    ) -> clerk_sync::store::StoreFuture<'a, clerk_sync::store::UpsertOutcome> {
        self.users.upsert(profile)
    }

    fn invalidation_channel(
        &self,
    ) -> Option<std::sync::Arc<dyn clerk_sync::store::InvalidationChannel>> {
        None
    }

    fn organizations(&self) -> Option<&dyn clerk_sync::store::OrganizationStore> {
        Some(&self.orgs)
    }
}

/// The layer only (no database to read back): the org routes of `app` need none here.
fn guarded(clerk: &ClerkSync) -> Router {
    Router::new()
        .route(
            "/invoices",
            get(|user: ClerkUser| async move {
                Json(json!({"synced_org_tier": user.organization_tier(), "synced": user.synced()}))
            })
            .layer(clerk.require(Check::permission("org:invoices:read"))),
        )
        .layer(clerk.layer())
        .merge(clerk.webhook_router(WEBHOOK_PATH).unwrap())
}

#[tokio::test]
async fn a_failing_organization_write_follows_the_failure_policy() {
    let issuer = DevIssuer::start().await.unwrap();
    let users = clerk_sync::MemoryUserStore::new();
    let store = OrgsDown {
        users: users.clone(),
        orgs: FailingOrgs,
    };
    let closed = clerk(&issuer, store, |b| b);
    let router = guarded(&closed);
    let token = member_token(&issuer, "user_ada", "org_acme", now());
    // Fail closed (the default): 503 with the JSON body, no handler.
    let reply = get_with_token(&router, "/invoices", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "sync_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    // A webhook that cannot be written is a 503 too, so Svix retries it.
    let created = json!({"type": "organization.created", "object": "event", "timestamp": now(),
                         "data": organization_object("org_acme", "acme", "Acme", now() * 1000)});
    let reply = deliver(&router, "msg_c", &created).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "sync_unavailable");

    // Fail open: the request passes on the token's claims, nothing is cached, and the next
    // request tries again.
    let open = clerk(
        &issuer,
        OrgsDown {
            users,
            orgs: FailingOrgs,
        },
        |b| b.failure_policy(clerk_sync::FailurePolicy::Open),
    );
    let router = guarded(&open);
    for _ in 0..2 {
        let reply = get_with_token(&router, "/invoices", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["synced_org_tier"], Value::Null);
    }
    assert_eq!(open.stats().organization_writes, 2, "retried, not cached");
}
