//! Every rejection: its status, its JSON code, RFC 6750 headers, and no row written.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use clerk_sync::testing::DevIssuer;
use clerk_sync::{AuthorizedPartyPolicy, ClerkConfig, ClerkSync, PgUserStore};
use common::{CountingStore, Harness, app, clerk, error_code, get_with_token, send, user_rows};
use http::{Request, StatusCode, header};
use sqlx::PgPool;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sends `token` to `/me` and checks status, code, headers and that nothing was written.
async fn assert_rejected(
    router: &axum::Router,
    pool: &PgPool,
    store: &CountingStore,
    case: &str,
    token: Option<&str>,
    status: StatusCode,
    code: &str,
) {
    let reply = get_with_token(router, "/me", token).await;
    assert_eq!(reply.status, status, "{case}: {}", reply.body);
    assert_eq!(error_code(&reply), code, "{case}");
    if status == StatusCode::UNAUTHORIZED {
        let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
    }
    assert_eq!(user_rows(pool).await, 0, "{case}: no row written");
    assert_eq!(store.calls(), 0, "{case}: the store was not called");
}

#[sqlx::test(migrations = false)]
async fn bad_tokens_are_rejected_without_touching_the_database(pool: PgPool) {
    let Harness {
        issuer,
        store,
        clerk,
        router,
    } = Harness::start(&pool, |b| b).await;
    let pem = issuer.public_key_pem();
    let valid = issuer.token("user_victim");
    let truncated = &valid[..valid.len() / 2];
    let t = now();

    let unauthorized = StatusCode::UNAUTHORIZED;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "missing_token"),
        ("garbage", Some("not-a-jwt".into()), "malformed_token"),
        ("truncated", Some(truncated.into()), "malformed_token"),
        ("four parts", Some(format!("{valid}.x")), "malformed_token"),
        (
            "no kid",
            Some(issuer.token_for("user_a").without_header("kid").build()),
            "malformed_token",
        ),
        (
            "no sub",
            Some(issuer.token_for("user_a").without_claim("sub").build()),
            "malformed_token",
        ),
        ("empty sub", Some(issuer.token("")), "malformed_token"),
        (
            "no iat",
            Some(issuer.token_for("user_a").without_claim("iat").build()),
            "malformed_token",
        ),
        (
            "string exp",
            Some(issuer.token_for("user_a").claim("exp", "tomorrow").build()),
            "malformed_token",
        ),
        (
            "wrong key",
            Some(issuer.token_for("user_a").wrong_signature().build()),
            "invalid_signature",
        ),
        (
            "tampered payload",
            Some(issuer.token_for("user_a").tampered().build()),
            "invalid_signature",
        ),
        (
            "alg none",
            Some(issuer.token_for("user_a").unsigned().build()),
            "invalid_signature",
        ),
        (
            "HS256 signed with the public key",
            Some(issuer.token_for("user_a").hs256(pem.as_bytes()).build()),
            "invalid_signature",
        ),
        (
            "RS512 header",
            Some(issuer.token_for("user_a").header("alg", "RS512").build()),
            "invalid_signature",
        ),
        (
            "10 s past exp",
            Some(issuer.token_for("user_a").expired_for(10).build()),
            "token_expired",
        ),
        (
            "nbf in the future",
            Some(issuer.token_for("user_a").claim("nbf", t + 30).build()),
            "token_not_yet_valid",
        ),
        (
            "iat in the future",
            Some(issuer.token_for("user_a").claim("iat", t + 30).build()),
            "token_not_yet_valid",
        ),
        (
            "other issuer",
            Some(
                issuer
                    .token_for("user_a")
                    .claim("iss", "https://other-instance.clerk.accounts.dev")
                    .build(),
            ),
            "invalid_issuer",
        ),
        (
            "no issuer",
            Some(issuer.token_for("user_a").without_claim("iss").build()),
            "malformed_token",
        ),
        (
            "foreign azp",
            Some(
                issuer
                    .token_for("user_a")
                    .claim("azp", "https://evil.example")
                    .build(),
            ),
            "invalid_authorized_party",
        ),
        (
            "machine-to-machine category",
            Some(
                issuer
                    .token_for("user_a")
                    .header("cat", "cl_B7d4PD333AAA")
                    .build(),
            ),
            "invalid_token_category",
        ),
        (
            "unknown category",
            Some(
                issuer
                    .token_for("user_a")
                    .header("cat", "cl_XXXXXXXXXXXX")
                    .build(),
            ),
            "invalid_token_category",
        ),
        (
            "pending session",
            Some(issuer.token_for("user_a").claim("sts", "pending").build()),
            "session_pending",
        ),
        (
            "unknown kid",
            Some(
                issuer
                    .token_for("user_a")
                    .header("kid", "ins_unknown")
                    .build(),
            ),
            "unknown_key",
        ),
    ];
    // Load the keys first, so `unknown kid` is judged against a fetched key set.
    assert_eq!(
        clerk.verifier().verify(&valid).await.unwrap().sub,
        "user_victim"
    );

    for (case, token, code) in &cases {
        assert_rejected(
            &router,
            &pool,
            &store,
            case,
            token.as_deref(),
            unauthorized,
            code,
        )
        .await;
    }
    let stats = clerk.stats();
    assert_eq!(stats.rejected_total(), cases.len() as u64);
    assert_eq!(stats.rejected("malformed_token"), 9);
    assert_eq!(stats.tokens_verified, 1, "only the warm-up token verified");
}

#[sqlx::test(migrations = false)]
async fn leeway_is_five_seconds_not_sixty(pool: PgPool) {
    let Harness { issuer, router, .. } = Harness::start(&pool, |b| b).await;

    let four_past = issuer.token_for("user_edge").expired_for(4).build();
    let reply = get_with_token(&router, "/me", Some(&four_past)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "4 s past exp is within the leeway"
    );

    let ten_past = issuer.token_for("user_late").expired_for(10).build();
    let reply = get_with_token(&router, "/me", Some(&ten_past)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&reply), "token_expired");
    assert_eq!(
        user_rows(&pool).await,
        1,
        "only the in-leeway user was written"
    );
}

#[sqlx::test(migrations = false)]
async fn cached_token_is_rejected_once_it_expires(pool: PgPool) {
    let Harness { issuer, router, .. } = Harness::start(&pool, |b| b.leeway(Duration::ZERO)).await;

    // Valid for one more second.
    let token = issuer
        .token_for("user_short")
        .claim("exp", now() + 1)
        .build();
    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&reply), "token_expired");
}

#[sqlx::test(migrations = false)]
async fn other_authorization_schemes_are_malformed(pool: PgPool) {
    let Harness { router, .. } = Harness::start(&pool, |b| b).await;
    let oversized = format!("Bearer {}", "a".repeat(16 * 1024 + 1));
    for value in ["Basic dXNlcjpwYXNz", "Bearer ", oversized.as_str()] {
        let request = Request::get("/me")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let reply = send(&router, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&reply), "malformed_token");
    }
    assert_eq!(user_rows(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn policies_can_require_azp_or_allow_pending_sessions(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let strict = clerk(&issuer, PgUserStore::new(pool.clone()), |b| {
        b.authorized_party_policy(AuthorizedPartyPolicy::Required)
    });
    let router = app(&strict, pool.clone());
    let no_azp = issuer.token_for("user_noazp").without_claim("azp").build();
    let reply = get_with_token(&router, "/me", Some(&no_azp)).await;
    assert_eq!(error_code(&reply), "invalid_authorized_party");
    assert_eq!(user_rows(&pool).await, 0);

    let lenient = clerk(&issuer, PgUserStore::new(pool.clone()), |b| {
        b.allow_pending_sessions(true)
    });
    let router = app(&lenient, pool.clone());
    let pending = issuer
        .token_for("user_pending")
        .claim("sts", "pending")
        .build();
    assert_eq!(
        get_with_token(&router, "/me", Some(&no_azp)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_with_token(&router, "/me", Some(&pending)).await.status,
        StatusCode::OK
    );
    assert_eq!(user_rows(&pool).await, 2);
}

#[sqlx::test(migrations = false)]
async fn required_azp_policy_without_parties_is_a_config_error(pool: PgPool) {
    let issuer = DevIssuer::start().await.unwrap();
    let config = ClerkConfig::builder()
        .issuer(issuer.issuer())
        .jwks_url(issuer.jwks_url())
        .build()
        .unwrap();
    let error = ClerkSync::builder(config)
        .store(PgUserStore::new(pool))
        .authorized_party_policy(AuthorizedPartyPolicy::Required)
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "CLERK_AUTHORIZED_PARTIES");
}
