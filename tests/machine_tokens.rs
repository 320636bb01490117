//! API consumers: API keys, M2M and OAuth tokens through the layers, against the real
//! PostgreSQL, `FakeClerkApi` (the Backend API's verify endpoints) and `DevIssuer` (JWTs).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::{Json, Router};
use clerk_sync::testing::{DevIssuer, FakeClerkApi, Fault};
use clerk_sync::{
    ClerkPrincipal, ClerkSync, ClerkSyncBuilder, ClerkUser, Limit, RateLimitLayer, TierLimits,
    TokenType,
};
use common::{CountingStore, Reply, TestDb, clerk, error_code, send, user_rows};
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sqlx::PgPool;

const MACHINE: &str = "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
const ORG: &str = "org_2xhFjEI5X2qWRvtV13BzSj8H6Dk";

struct Machines {
    issuer: DevIssuer,
    fake: FakeClerkApi,
    clerk: ClerkSync,
    store: CountingStore,
    router: Router,
    pool: PgPool,
}

/// `/api/me` takes any type, `/keys` API keys only, `/me` sessions only, `/user-only` any
/// type but its handler needs a user, `/limited` any type under a limiter (users 3/min,
/// machines 2/min, organizations 1/min).
fn routes(clerk: &ClerkSync, pool: PgPool) -> Router {
    let limits = TierLimits::new(Limit::per_minute(3).unwrap())
        .machines(Limit::per_minute(2).unwrap())
        .organizations(Limit::per_minute(1).unwrap());
    let any = Router::new()
        .route("/api/me", get(who))
        .route("/user-only", get(user_only))
        .layer(clerk.layer().accepts_any());
    let keys = Router::new()
        .route("/keys", get(who))
        .layer(clerk.layer().accepts([TokenType::ApiKey]));
    let sessions = Router::new().route("/me", get(who)).layer(clerk.layer());
    let maybe = Router::new()
        .route("/maybe", get(maybe))
        .layer(clerk.optional_layer().accepts_any());
    let limited = Router::new()
        .route("/limited", get(who))
        .layer(RateLimitLayer::per_tier(limits))
        .layer(clerk.layer().accepts_any());
    any.merge(keys)
        .merge(sessions)
        .merge(maybe)
        .merge(limited)
        .with_state(pool)
}

/// What the caller is, and whether its row existed when the handler ran.
async fn who(State(pool): State<PgPool>, caller: ClerkPrincipal) -> Json<Value> {
    let user = caller.user();
    let row = match user {
        Some(user) => pool.row(user.user_id()).await,
        None => None,
    };
    let machine = caller.machine();
    Json(json!({
        "token_type": caller.token_type().as_str(),
        "subject": caller.subject(),
        "user_id": user.map(ClerkUser::user_id),
        "machine_id": machine.and_then(|m| m.machine_id()),
        "org_id": machine.and_then(|m| m.org_id()),
        "scopes": caller.scopes(),
        "claims": machine.and_then(|m| m.claims().cloned())
            .or_else(|| user.map(|u| Value::Object(u.claims().custom.clone()))),
        "tier": user.map(ClerkUser::tier),
        "row_exists": row.is_some(),
    }))
}

async fn maybe(caller: Option<ClerkPrincipal>) -> String {
    caller.map_or_else(|| "anonymous".to_owned(), |c| c.subject().to_owned())
}

async fn user_only(user: ClerkUser) -> String {
    user.user_id().to_owned()
}

async fn start(
    pool: &PgPool,
    tweak: impl FnOnce(ClerkSyncBuilder) -> ClerkSyncBuilder,
) -> Machines {
    pool.migrate().await;
    let issuer = DevIssuer::start().await.unwrap();
    let fake = FakeClerkApi::start(3).await.unwrap();
    let store = CountingStore::new(pool.clone());
    let api = fake.client();
    let clerk = clerk(&issuer, store.clone(), |b| tweak(b.clerk_api(api)));
    let router = routes(&clerk, pool.clone());
    for (token, token_type, answer) in [
        (
            "ak_user",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(&user(0)),
        ),
        (
            "ak_org",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(ORG),
        ),
        (
            "ak_machine",
            TokenType::ApiKey,
            FakeClerkApi::api_key_answer(MACHINE),
        ),
        (
            "mt_machine",
            TokenType::M2mToken,
            FakeClerkApi::m2m_answer(MACHINE),
        ),
        (
            "oat_user",
            TokenType::OAuthToken,
            FakeClerkApi::oauth_answer(&user(1)),
        ),
    ] {
        fake.add_machine_token(token, token_type, answer);
    }
    Machines {
        issuer,
        fake,
        clerk,
        store,
        router,
        pool: pool.clone(),
    }
}

/// A user the fake Backend API knows (so profile enrichment finds it).
fn user(index: u64) -> String {
    FakeClerkApi::user_id(index)
}

fn request(path: &str, token: &str, client: IpAddr) -> Request<Body> {
    let mut request = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((client, 40_000))));
    request
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(since.unwrap().as_millis()).unwrap()
}

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));

async fn call(m: &Machines, path: &str, token: &str) -> Reply {
    send(&m.router, request(path, token, CLIENT)).await
}

fn total_verify_calls(fake: &FakeClerkApi) -> u64 {
    [
        TokenType::ApiKey,
        TokenType::M2mToken,
        TokenType::OAuthToken,
    ]
    .into_iter()
    .map(|t| fake.verify_requests(t))
    .sum()
}

/// Asserts a rejection: status, code, JSON body, and nothing written.
async fn assert_refused(m: &Machines, reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(error_code(reply), code);
    assert_eq!(user_rows(&m.pool).await, 0, "nothing written");
}

#[sqlx::test]
async fn each_type_passes_only_the_layers_that_accept_it(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let session = m.issuer.token(&user(2));
    let m2m_jwt = m.issuer.m2m_jwt_for(MACHINE).build();
    let oauth_jwt = m.issuer.oauth_jwt_for(&user(1)).build();
    let tokens = [
        ("ak_user", "api_key"),
        ("mt_machine", "m2m_token"),
        ("oat_user", "oauth_token"),
        (session.as_str(), "session_token"),
        (m2m_jwt.as_str(), "m2m_token"),
        (oauth_jwt.as_str(), "oauth_token"),
    ];
    // Refusals first, while nothing is written: each before any network call.
    for (token, token_type) in tokens {
        for (path, takes) in [("/me", "session_token"), ("/keys", "api_key")] {
            if token_type == takes {
                continue;
            }
            let reply = call(&m, path, token).await;
            assert_refused(
                &m,
                &reply,
                StatusCode::UNAUTHORIZED,
                "token_type_not_accepted",
            )
            .await;
            assert!(
                reply.body["message"].as_str().unwrap().contains(token_type),
                "{}",
                reply.body
            );
            assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
        }
    }
    assert_eq!(
        total_verify_calls(&m.fake),
        0,
        "refused before any Backend API call"
    );
    assert_eq!(m.issuer.jwks_fetches(), 0, "refused before any key fetch");
    // Accepted where they are taken.
    for (token, token_type) in tokens {
        let reply = call(&m, "/api/me", token).await;
        assert_eq!(reply.status, StatusCode::OK, "{token_type}: {}", reply.body);
        assert_eq!(reply.body["token_type"], token_type);
    }
    assert_eq!(call(&m, "/keys", "ak_user").await.status, StatusCode::OK);
    assert_eq!(call(&m, "/me", &session).await.status, StatusCode::OK);
    // Once cached, still refused by the layers that do not take the type.
    let reply = call(&m, "/me", &m2m_jwt).await;
    assert_eq!(error_code(&reply), "token_type_not_accepted");
    let reply = call(&m, "/keys", &oauth_jwt).await;
    assert_eq!(error_code(&reply), "token_type_not_accepted");
}

#[sqlx::test]
async fn machine_tokens_never_come_from_cookies(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let m2m_jwt = m.issuer.m2m_jwt_for(MACHINE).build();
    let now = now_ms() / 1000;
    for token in ["ak_user", m2m_jwt.as_str()] {
        let request = Request::get("/api/me")
            .header(
                header::COOKIE,
                format!("__session={token}; __client_uat={}", now - 30),
            )
            .body(Body::empty())
            .unwrap();
        let reply = send(&m.router, request).await;
        assert_refused(
            &m,
            &reply,
            StatusCode::UNAUTHORIZED,
            "token_type_not_accepted",
        )
        .await;
    }
    assert_eq!(total_verify_calls(&m.fake), 0);
}

#[sqlx::test]
async fn api_keys_with_user_org_and_machine_subjects(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let mut with_claims = FakeClerkApi::api_key_answer(&user(0));
    with_claims["claims"] = json!({"foo": "bar"});
    m.fake
        .add_machine_token("ak_user", TokenType::ApiKey, with_claims);

    let reply = call(&m, "/api/me", "ak_user").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user_id"], user(0));
    assert_eq!(reply.body["row_exists"], true, "synced before the handler");
    assert_eq!(reply.body["tier"], "free");
    assert_eq!(reply.body["scopes"], json!(["read", "write"]));
    assert_eq!(reply.body["claims"], json!({"foo": "bar"}));
    assert_eq!(reply.body["machine_id"], Value::Null);

    let reply = call(&m, "/api/me", "ak_org").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        (
            reply.body["org_id"].as_str(),
            reply.body["user_id"].as_str()
        ),
        (Some(ORG), None)
    );
    let reply = call(&m, "/api/me", "ak_machine").await;
    assert_eq!(reply.body["machine_id"], MACHINE);
    assert_eq!(
        m.pool.ids().await,
        [user(0)],
        "machines and organizations are not users"
    );

    // The optional layer takes machine tokens too, and passes requests without a token.
    let body = |request: Request<Body>| async {
        let response = tower::ServiceExt::oneshot(m.router.clone(), request)
            .await
            .unwrap();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        String::from_utf8(bytes.to_bytes().to_vec()).unwrap()
    };
    assert_eq!(
        body(Request::get("/maybe").body(Body::empty()).unwrap()).await,
        "anonymous"
    );
    assert_eq!(body(request("/maybe", "ak_machine", CLIENT)).await, MACHINE);
    let reply = call(&m, "/maybe", "ak_unknown").await;
    assert_eq!(
        error_code(&reply),
        "invalid_token",
        "a bad token is no anonymous request"
    );

    // A handler that needs a user refuses a machine with 403, and a user passes.
    let reply = call(&m, "/user-only", "ak_machine").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "forbidden");
    assert_eq!(
        call(&m, "/user-only", "ak_user").await.status,
        StatusCode::OK
    );
}

#[sqlx::test]
async fn machine_tokens_contribute_no_profile_fields(pool: PgPool) {
    // Profiles from claims only: a machine token's custom claims never reach the row.
    let m = start(&pool, |b| {
        b.profile_source(clerk_sync::ProfileSource::Claims)
    })
    .await;
    let mut answer = FakeClerkApi::api_key_answer(&user(0));
    answer["claims"] = json!({"email": "attacker@example.com", "first_name": "Mallory"});
    m.fake
        .add_machine_token("ak_claims", TokenType::ApiKey, answer);
    let oauth = m
        .issuer
        .oauth_jwt_for(&user(1))
        .claim("email", "jwt@example.com")
        .build();
    assert_eq!(
        call(&m, "/api/me", "ak_claims").await.status,
        StatusCode::OK
    );
    assert_eq!(call(&m, "/api/me", &oauth).await.status, StatusCode::OK);
    assert_eq!(m.pool.row(&user(0)).await, Some(("free".to_owned(), None)));
    assert_eq!(m.pool.row(&user(1)).await, Some(("free".to_owned(), None)));
}

#[sqlx::test]
async fn every_backend_api_refusal_and_failure_has_its_code_and_writes_nothing(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let mut revoked = FakeClerkApi::api_key_answer(&user(0));
    revoked["revoked"] = true.into();
    m.fake
        .add_machine_token("ak_revoked", TokenType::ApiKey, revoked);
    let mut expired = FakeClerkApi::m2m_answer(MACHINE);
    expired["expired"] = true.into();
    m.fake
        .add_machine_token("mt_expired", TokenType::M2mToken, expired);
    let mut past = FakeClerkApi::api_key_answer(&user(0));
    past["expiration"] = (now_ms() - 1_000).into();
    m.fake.add_machine_token("ak_past", TokenType::ApiKey, past);
    for (token, status, code) in [
        ("ak_revoked", StatusCode::UNAUTHORIZED, "token_revoked"),
        ("mt_expired", StatusCode::UNAUTHORIZED, "token_expired"),
        ("ak_past", StatusCode::UNAUTHORIZED, "token_expired"),
        ("ak_unknown", StatusCode::UNAUTHORIZED, "invalid_token"),
        ("mt_unknown", StatusCode::UNAUTHORIZED, "invalid_token"),
        // OAuth's 200 `{"active": false}`.
        ("oat_unknown", StatusCode::UNAUTHORIZED, "invalid_token"),
    ] {
        let reply = call(&m, "/api/me", token).await;
        assert_refused(&m, &reply, status, code).await;
        assert!(
            reply.headers.contains_key(header::WWW_AUTHENTICATE),
            "{token}"
        );
    }

    // Clerk down or rate limiting: 503 with Retry-After, nothing cached.
    m.fake.add_machine_token(
        "ak_good",
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(&user(0)),
    );
    for fault in [
        Fault::ServerError(502),
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
    ] {
        m.fake.fail_next(1, fault);
        let reply = call(&m, "/api/me", "ak_good").await;
        assert_refused(
            &m,
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
            "verification_unavailable",
        )
        .await;
        assert!(reply.headers.contains_key(header::RETRY_AFTER));
    }
    let before = m.fake.verify_requests(TokenType::ApiKey);
    assert_eq!(call(&m, "/api/me", "ak_good").await.status, StatusCode::OK);
    assert_eq!(
        m.fake.verify_requests(TokenType::ApiKey),
        before + 1,
        "failures were not cached"
    );
}

#[sqlx::test]
async fn a_wrong_secret_key_is_503_and_a_configuration_error(pool: PgPool) {
    pool.migrate().await;
    let issuer = DevIssuer::start().await.unwrap();
    let fake = FakeClerkApi::start(1).await.unwrap();
    let wrong = clerk_sync::ClerkApi::new(&fake.url(), "sk_test_wrong").unwrap();
    let clerk = clerk(&issuer, CountingStore::new(pool.clone()), |b| {
        b.clerk_api(wrong)
    });
    let router = routes(&clerk, pool.clone());
    fake.add_machine_token(
        "ak_good",
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(&user(0)),
    );
    for _ in 0..3 {
        let reply = send(&router, request("/api/me", "ak_good", CLIENT)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&reply), "verification_unavailable");
    }
    assert_eq!(
        fake.verify_requests(TokenType::ApiKey),
        3,
        "never negatively cached"
    );
    assert_eq!(user_rows(&pool).await, 0);
}

#[sqlx::test]
async fn without_a_secret_key_opaque_tokens_are_503_and_jwts_still_work(pool: PgPool) {
    pool.migrate().await;
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, CountingStore::new(pool.clone()), |b| {
        b.profile_source(clerk_sync::ProfileSource::Claims)
    });
    let router = routes(&clerk, pool.clone());
    let reply = send(&router, request("/api/me", "ak_anything", CLIENT)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "verification_unavailable");
    assert_eq!(user_rows(&pool).await, 0);
    let m2m = issuer.m2m_jwt_for(MACHINE).build();
    let reply = send(&router, request("/api/me", &m2m, CLIENT)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test]
async fn machine_jwts_are_verified_locally(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let m2m = m
        .issuer
        .m2m_jwt_for(MACHINE)
        .claim("scopes", "mch_a mch_b")
        .claim("team", "ops")
        .build();
    let reply = call(&m, "/api/me", &m2m).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["machine_id"], MACHINE);
    assert_eq!(reply.body["scopes"], json!(["mch_a", "mch_b"]));
    assert_eq!(reply.body["claims"]["team"], "ops");
    // Without a category, as Clerk's SDK allows.
    let plain = m.issuer.m2m_jwt_for(MACHINE).without_header("cat").build();
    assert_eq!(call(&m, "/api/me", &plain).await.status, StatusCode::OK);
    let oauth = m.issuer.oauth_jwt_for(&user(0)).build();
    let reply = call(&m, "/api/me", &oauth).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user_id"], user(0));
    assert_eq!(reply.body["row_exists"], true);
    assert_eq!(reply.body["scopes"], json!(["profile", "email"]));
    let reply = call(
        &m,
        "/api/me",
        &m.issuer
            .oauth_jwt_for(&user(0))
            .header("typ", "application/at+jwt")
            .build(),
    )
    .await;
    assert_eq!(reply.body["token_type"], "oauth_token");
    assert_eq!(
        total_verify_calls(&m.fake),
        0,
        "JWTs need no Backend API call"
    );
    sqlx::query("DELETE FROM users")
        .execute(&m.pool)
        .await
        .unwrap();
    m.clerk.invalidate(&user(0)).await.unwrap();

    let foreign = DevIssuer::start().await.unwrap();
    let other_issuer = m
        .issuer
        .m2m_jwt_for(MACHINE)
        .claim("iss", "https://other.example")
        .build();
    for (token, code) in [
        (
            m.issuer.m2m_jwt_for(MACHINE).expired_for(60).build(),
            "token_expired",
        ),
        (
            m.issuer.oauth_jwt_for(&user(1)).expired_for(60).build(),
            "token_expired",
        ),
        (
            m.issuer
                .m2m_jwt_for(MACHINE)
                .header("cat", "cl_B7d4PD111AAA")
                .build(),
            "invalid_token_category",
        ),
        (
            m.issuer
                .m2m_jwt_for(MACHINE)
                .header("cat", "cl_B7d4PD222AAA")
                .build(),
            "invalid_token_category",
        ),
        (
            m.issuer
                .oauth_jwt_for(&user(1))
                .header("cat", "cl_B7d4PD333AAA")
                .build(),
            "invalid_token_category",
        ),
        (other_issuer, "invalid_issuer"),
        (
            m.issuer
                .oauth_jwt_for(&user(1))
                .claim("iss", "https://other.example")
                .build(),
            "invalid_issuer",
        ),
        (
            m.issuer.m2m_jwt_for(MACHINE).wrong_signature().build(),
            "invalid_signature",
        ),
        // Another instance's key (same kid shape, not in this JWKS).
        (
            foreign
                .m2m_jwt_for(MACHINE)
                .header("kid", m.issuer.kid())
                .build(),
            "invalid_signature",
        ),
        (
            foreign
                .oauth_jwt_for(&user(1))
                .header("kid", m.issuer.kid())
                .build(),
            "invalid_signature",
        ),
    ] {
        let reply = call(&m, "/api/me", &token).await;
        assert_refused(&m, &reply, StatusCode::UNAUTHORIZED, code).await;
    }
    // A wrong `typ` makes an OAuth JWT a session token, and `/keys` does not take sessions.
    let wrong_typ = m
        .issuer
        .oauth_jwt_for(&user(1))
        .header("typ", "JWT")
        .build();
    let reply = call(&m, "/keys", &wrong_typ).await;
    assert_refused(
        &m,
        &reply,
        StatusCode::UNAUTHORIZED,
        "token_type_not_accepted",
    )
    .await;
}

#[sqlx::test]
async fn one_api_call_per_key_however_many_and_however_concurrent(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    m.fake.add_machine_token(
        "ak_hot",
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(&user(0)),
    );
    for _ in 0..1_000 {
        assert_eq!(call(&m, "/api/me", "ak_hot").await.status, StatusCode::OK);
    }
    assert_eq!(m.fake.verify_requests(TokenType::ApiKey), 1);
    assert_eq!(m.store.calls(), 2, "one upsert, one enrichment write");

    m.fake.add_machine_token(
        "ak_burst",
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(&user(1)),
    );
    m.fake.set_latency(Duration::from_millis(50));
    let router = Arc::new(m.router.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u8 {
        let router = router.clone();
        tasks.spawn(async move {
            send(
                &router,
                request("/api/me", "ak_burst", IpAddr::from([10, 0, 1, i])),
            )
            .await
            .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        m.fake.verify_requests(TokenType::ApiKey),
        2,
        "200 first uses, one call"
    );
}

#[sqlx::test]
async fn a_rejected_key_costs_one_call_per_negative_interval(pool: PgPool) {
    let m = start(&pool, |b| {
        b.machine_token_negative_ttl(Duration::from_millis(500))
    })
    .await;
    for _ in 0..100 {
        let reply = call(&m, "/api/me", "ak_bad").await;
        assert_eq!(error_code(&reply), "invalid_token");
    }
    assert_eq!(m.fake.verify_requests(TokenType::ApiKey), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..100 {
        call(&m, "/api/me", "ak_bad").await;
    }
    assert_eq!(
        m.fake.verify_requests(TokenType::ApiKey),
        2,
        "one more after the interval"
    );
}

#[sqlx::test]
async fn a_flood_of_unknown_keys_from_one_client_spends_its_budget_then_gets_429(pool: PgPool) {
    // Burst 20 as by default, no refill during the test: the budget reads the monotonic
    // clock, so refill is turned off instead of pausing Tokio's clock (which would also fire
    // the HTTP client's timeouts).
    let m = start(&pool, |b| b.machine_token_budget(0, 20)).await;
    m.fake.set_latency(Duration::from_millis(20));
    let router = Arc::new(m.router.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let router = router.clone();
        tasks.spawn(async move {
            send(
                &router,
                request("/api/me", &format!("ak_random{i:03}"), CLIENT),
            )
            .await
        });
    }
    let (mut invalid, mut limited) = (0, 0);
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        match error_code(&reply).as_str() {
            "invalid_token" => invalid += 1,
            "rate_limited" => {
                assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
                assert!(reply.headers.contains_key(header::RETRY_AFTER));
                limited += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!((invalid, limited), (20, 80));
    assert_eq!(
        m.fake.verify_requests(TokenType::ApiKey),
        20,
        "exactly the burst"
    );
    // Another client has its own budget.
    let other = send(
        &m.router,
        request("/api/me", "ak_random999", IpAddr::from([198, 51, 100, 9])),
    )
    .await;
    assert_eq!(error_code(&other), "invalid_token");
    assert_eq!(user_rows(&m.pool).await, 0);
}

#[sqlx::test]
async fn a_users_api_key_shares_the_users_rate_limit_and_machines_have_their_own(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let session = m.issuer.token(&user(0));
    // Users: 3 a minute, shared by the session and the key.
    for token in [session.as_str(), "ak_user", session.as_str()] {
        let reply = call(&m, "/limited", token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["row_exists"], true);
    }
    let reply = call(&m, "/limited", "ak_user").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(&reply), "rate_limited");
    // Machines: 2 a minute; organizations: 1.
    for _ in 0..2 {
        assert_eq!(
            call(&m, "/limited", "mt_machine").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&m, "/limited", "mt_machine").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call(&m, "/limited", "ak_org").await.status, StatusCode::OK);
    let reply = call(&m, "/limited", "ak_org").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers["ratelimit-limit"], "1");
}

#[sqlx::test]
async fn a_deleted_users_api_key_gets_403_and_writes_nothing(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    assert_eq!(call(&m, "/api/me", "ak_user").await.status, StatusCode::OK);
    sqlx::query("UPDATE users SET deleted_at = now() WHERE id = $1")
        .bind(user(0))
        .execute(&m.pool)
        .await
        .unwrap();
    m.clerk.invalidate(&user(0)).await.unwrap();
    let calls = m.store.calls();
    let reply = call(&m, "/api/me", "ak_user").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "user_deleted");
    assert_eq!(
        m.store.calls(),
        calls + 1,
        "one upsert attempt, which resurrects nothing"
    );
    let deleted: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM users WHERE id = $1")
            .bind(user(0))
            .fetch_one(&m.pool)
            .await
            .unwrap();
    assert!(deleted);
}

#[sqlx::test]
async fn a_cached_key_never_outlives_its_expiration(pool: PgPool) {
    let m = start(&pool, |b| b).await;
    let mut short = FakeClerkApi::api_key_answer(&user(0));
    let expires_ms = now_ms() + 2_500;
    short["expiration"] = expires_ms.into();
    m.fake
        .add_machine_token("ak_short", TokenType::ApiKey, short);
    assert_eq!(call(&m, "/api/me", "ak_short").await.status, StatusCode::OK);
    assert_eq!(call(&m, "/api/me", "ak_short").await.status, StatusCode::OK);
    assert_eq!(m.fake.verify_requests(TokenType::ApiKey), 1);
    // Past the expiration: asked again (nothing cached says yes), and refused.
    let wait = expires_ms - now_ms() + 100;
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap())).await;
    let reply = call(&m, "/api/me", "ak_short").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&reply), "token_expired");
    assert_eq!(m.fake.verify_requests(TokenType::ApiKey), 2);
}

#[sqlx::test]
async fn the_ttl_bounds_how_long_a_revoked_key_keeps_working(pool: PgPool) {
    let m = start(&pool, |b| b.machine_token_cache_ttl(Duration::from_secs(2))).await;
    assert_eq!(call(&m, "/api/me", "ak_user").await.status, StatusCode::OK);
    let mut revoked = FakeClerkApi::api_key_answer(&user(0));
    revoked["revoked"] = true.into();
    m.fake
        .add_machine_token("ak_user", TokenType::ApiKey, revoked);
    assert_eq!(
        call(&m, "/api/me", "ak_user").await.status,
        StatusCode::OK,
        "within the TTL"
    );
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let reply = call(&m, "/api/me", "ak_user").await;
    assert_eq!(error_code(&reply), "token_revoked");
    assert_eq!(m.fake.verify_requests(TokenType::ApiKey), 2);
}
