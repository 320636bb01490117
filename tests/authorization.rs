//! Organization claims, `has()` and route guards through the layer (memory store: nothing
//! here tests storage). The `has()` semantics themselves are compared with Clerk's JS SDK on
//! a corpus in `src/authz/` (`tests/fixtures/has_corpus.json`).
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use clerk_sync::authz::{Check, Reverification};
use clerk_sync::testing::DevIssuer;
use clerk_sync::{Authorized, ClerkUser, MemoryUserStore, Requirement, TokenType};
use common::{Reply, clerk, error_code, get_with_token, send};
use http::{Request, StatusCode};
use serde_json::{Value, json};

static PRO: std::sync::LazyLock<Check> = std::sync::LazyLock::new(|| Check::plan("o:pro"));

struct ReadInvoices;

impl Requirement for ReadInvoices {
    fn check() -> Check {
        Check::permission("org:invoices:read")
    }
}

async fn me(user: ClerkUser) -> axum::Json<Value> {
    let org = user.organization();
    axum::Json(json!({
        "org_id": org.map(|o| o.id.clone()),
        "org_slug": org.and_then(|o| o.slug.clone()),
        "org_role": org.and_then(|o| o.role.clone()),
        "permissions": org.map(|o| o.permissions.clone()),
        "has_admin": user.has(Check::role("admin")),
        // By reference too, for checks kept around.
        "has_pro": user.has(&*PRO),
    }))
}

async fn extracted(authorized: Authorized<ReadInvoices>) -> String {
    let user = authorized.user();
    user.user_id().to_owned()
}

fn app(clerk: &clerk_sync::ClerkSync) -> Router {
    let ok = || get(|| async { "ok" });
    let guarded = Router::new()
        .route("/me", get(me))
        .route(
            "/invoices",
            ok().layer(clerk.require(Check::permission("org:invoices:read"))),
        )
        .route("/admins", ok().layer(clerk.require(Check::role("admin"))))
        .route(
            "/billing",
            ok().layer(clerk.require(Check::role("admin").and(Check::plan("o:pro")))),
        )
        .route(
            "/sensitive",
            ok().layer(clerk.require(Check::reverification(Reverification::Strict))),
        )
        .route("/extracted", get(extracted))
        .layer(clerk.layer().accepts_any());
    let optional = Router::new()
        .route(
            "/maybe-invoices",
            ok().layer(clerk.require(Check::permission("org:invoices:read"))),
        )
        .layer(clerk.optional_layer());
    let bare = Router::new().route("/no-layer", ok().layer(clerk.require(Check::role("admin"))));
    guarded.merge(optional).merge(bare)
}

struct Setup {
    issuer: DevIssuer,
    router: Router,
}

async fn setup() -> Setup {
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, MemoryUserStore::new(), |b| b);
    let router = app(&clerk);
    Setup { issuer, router }
}

fn refused(reply: &Reply, status: StatusCode, code: &str, mentions: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(error_code(reply), code);
    let message = reply.body["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message}");
}

#[tokio::test]
async fn guards_let_through_exactly_what_the_token_grants() {
    let s = setup().await;
    let admin = s
        .issuer
        .token_for("user_admin")
        .features("u:profile")
        .plans("o:pro")
        .organization(
            "org_1",
            "acme",
            "admin",
            &["org:invoices:read", "org:invoices:manage"],
        )
        .factor_ages(2, 3)
        .build();
    let reply = get_with_token(&s.router, "/me", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"org_id": "org_1", "org_slug": "acme", "org_role": "org:admin",
            "permissions": ["org:invoices:read", "org:invoices:manage"],
            "has_admin": true, "has_pro": true})
    );
    for path in [
        "/invoices",
        "/admins",
        "/billing",
        "/sensitive",
        "/extracted",
    ] {
        let reply = get_with_token(&s.router, path, Some(&admin)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }

    // A member without the permission, the plan or a recent second factor.
    let member = s
        .issuer
        .token_for("user_member")
        .organization("org_1", "acme", "member", &["org:dashboard:read"])
        .factor_ages(30, 30)
        .build();
    let reply = get_with_token(&s.router, "/invoices", Some(&member)).await;
    refused(
        &reply,
        StatusCode::FORBIDDEN,
        "forbidden",
        "org:invoices:read",
    );
    let reply = get_with_token(&s.router, "/extracted", Some(&member)).await;
    refused(
        &reply,
        StatusCode::FORBIDDEN,
        "forbidden",
        "org:invoices:read",
    );
    let reply = get_with_token(&s.router, "/admins", Some(&member)).await;
    refused(&reply, StatusCode::FORBIDDEN, "forbidden", "org:admin");
    let reply = get_with_token(&s.router, "/billing", Some(&admin_without_plan(&s.issuer))).await;
    refused(&reply, StatusCode::FORBIDDEN, "forbidden", "plan o:pro");

    // Reverification: Clerk's own 403 shape, which Clerk's frontend answers.
    let reply = get_with_token(&s.router, "/sensitive", Some(&member)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.body,
        json!({"clerk_error": {"type": "forbidden", "reason": "reverification-error",
            "metadata": {"reverification": {"level": "second_factor", "afterMinutes": 10}}}})
    );
}

fn admin_without_plan(issuer: &DevIssuer) -> String {
    issuer
        .token_for("user_admin2")
        .plans("u:pro")
        .organization("org_1", "acme", "admin", &[])
        .build()
}

#[tokio::test]
async fn without_an_organization_role_and_permission_checks_are_organization_required() {
    let s = setup().await;
    let personal = s.issuer.token_for("user_solo").factor_ages(1, -1).build();
    for path in ["/invoices", "/admins", "/extracted"] {
        let reply = get_with_token(&s.router, path, Some(&personal)).await;
        refused(
            &reply,
            StatusCode::FORBIDDEN,
            "organization_required",
            "active organization",
        );
    }
    // No second factor: `strict` reads the first one, as Clerk's SDK does.
    let reply = get_with_token(&s.router, "/sensitive", Some(&personal)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn machines_anonymous_requests_and_missing_layers_are_refused_by_guards() {
    let s = setup().await;
    let m2m = s.issuer.m2m_jwt_for("mch_guarded").build();
    let reply = get_with_token(&s.router, "/invoices", Some(&m2m)).await;
    refused(&reply, StatusCode::FORBIDDEN, "forbidden", "machine");
    let reply = send(
        &s.router,
        Request::get("/maybe-invoices").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&reply), "missing_token");
    assert!(reply.headers.contains_key(http::header::WWW_AUTHENTICATE));
    let reply = send(
        &s.router,
        Request::get("/no-layer").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&reply), "clerk_layer_missing");
    // `TokenType` is what the layer saw; guards only look at the synced user.
    assert_eq!(TokenType::M2mToken.as_str(), "m2m_token");
}

#[tokio::test]
async fn v1_organization_claims_are_read_too() {
    let s = setup().await;
    let v1 = s
        .issuer
        .token_for("user_v1")
        .without_claim("v")
        .claim("org_id", "org_v1")
        .claim("org_role", "org:admin")
        .claim("org_slug", "legacy")
        .claim("org_permissions", json!(["org:invoices:read"]))
        .build();
    let reply = get_with_token(&s.router, "/me", Some(&v1)).await;
    assert_eq!(reply.body["org_id"], "org_v1");
    assert_eq!(reply.body["org_role"], "org:admin");
    assert_eq!(
        get_with_token(&s.router, "/invoices", Some(&v1))
            .await
            .status,
        StatusCode::OK
    );
}
