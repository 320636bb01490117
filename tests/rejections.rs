//! Every rejection: its status, its JSON code, RFC 6750 headers, and no row written.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use clerk_sync::testing::DevIssuer;
use clerk_sync::{AuthorizedPartyPolicy, ClerkConfig, ClerkSync, MemoryUserStore};
use common::{
    CountingStore, Harness, TestDb, app, clerk, error_code, get_with_token, send, user_rows,
};
use http::{Request, StatusCode, header};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sends `token` to `/me` and checks status, code, headers and that nothing was written.
async fn assert_rejected(
    router: &axum::Router,
    db: &impl TestDb,
    store: &CountingStore<MemoryUserStore>,
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
    assert_eq!(user_rows(db).await, 0, "{case}: no row written");
    assert_eq!(store.calls(), 0, "{case}: the store was not called");
}

#[tokio::test]
async fn bad_tokens_are_rejected_without_touching_the_database() {
    let db = MemoryUserStore::new();
    let Harness {
        issuer,
        store,
        clerk,
        router,
    } = Harness::start(&db, |b| b).await;
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
            "JWT template (refused by default)",
            Some(issuer.template_for("user_a").build()),
            "invalid_token_category",
        ),
        (
            "M2M JWT (machine subject, machine category)",
            Some(
                issuer
                    .m2m_jwt_for("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk")
                    .build(),
            ),
            "token_type_not_accepted",
        ),
        (
            "machine subject under the session category",
            Some(issuer.token("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk")),
            "token_type_not_accepted",
        ),
        (
            "OAuth access token (typ at+jwt, session category)",
            Some(issuer.oauth_jwt_for("user_a").build()),
            "token_type_not_accepted",
        ),
        (
            "OAuth access token (typ application/at+jwt)",
            Some(
                issuer
                    .oauth_jwt_for("user_a")
                    .header("typ", "application/at+jwt")
                    .build(),
            ),
            "token_type_not_accepted",
        ),
        (
            "API key on a session route",
            Some("ak_3beecc9c60adb5f9b850e91a8ee1e992".into()),
            "token_type_not_accepted",
        ),
        (
            "opaque M2M token on a session route",
            Some("mt_9b2f4c6e8a0d1f3b5c7e9a1d3f5b7c9e".into()),
            "token_type_not_accepted",
        ),
        (
            "opaque OAuth token on a session route",
            Some("oat_4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c".into()),
            "token_type_not_accepted",
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
            &db,
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

#[tokio::test]
async fn leeway_is_five_seconds_not_sixty() {
    let db = MemoryUserStore::new();
    let Harness { issuer, router, .. } = Harness::start(&db, |b| b).await;

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
        user_rows(&db).await,
        1,
        "only the in-leeway user was written"
    );
}

#[tokio::test]
async fn cached_token_is_rejected_once_it_expires() {
    let db = MemoryUserStore::new();
    let Harness { issuer, router, .. } = Harness::start(&db, |b| b.leeway(Duration::ZERO)).await;

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

#[tokio::test]
async fn other_authorization_schemes_are_malformed() {
    let db = MemoryUserStore::new();
    let Harness { router, .. } = Harness::start(&db, |b| b).await;
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
    assert_eq!(user_rows(&db).await, 0);
}

#[tokio::test]
async fn a_non_ascii_authorization_header_is_malformed() {
    let db = MemoryUserStore::new();
    let Harness { router, store, .. } = Harness::start(&db, |b| b).await;
    // Not UTF-8 (a lone obs-text byte), and UTF-8 but not ASCII: the first is refused while
    // the header is read, the second after the cache missed; both with the same answer.
    let values: [&[u8]; 3] = [
        b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.\xff",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sïgnature".as_bytes(),
        "eyJhbGciOiJSUzI1NiJ9.é30.x".as_bytes(),
    ];
    for value in values {
        let request = Request::get("/me")
            .header(
                header::AUTHORIZATION,
                http::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        let reply = send(&router, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{value:?}");
        assert_eq!(error_code(&reply), "malformed_token");
        assert_eq!(
            reply.body["message"], "malformed session token: the Authorization header is not ASCII",
            "{}",
            reply.body
        );
    }
    assert_eq!(user_rows(&db).await, 0);
    assert_eq!(store.calls(), 0);
}

#[tokio::test]
async fn policies_can_require_azp_or_allow_pending_sessions() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    let strict = clerk(&issuer, db.store(), |b| {
        b.authorized_party_policy(AuthorizedPartyPolicy::Required)
    });
    let router = app(&strict, db.clone());
    let no_azp = issuer.token_for("user_noazp").without_claim("azp").build();
    let reply = get_with_token(&router, "/me", Some(&no_azp)).await;
    assert_eq!(error_code(&reply), "invalid_authorized_party");
    assert_eq!(user_rows(&db).await, 0);

    let lenient = clerk(&issuer, db.store(), |b| b.allow_pending_sessions(true));
    let router = app(&lenient, db.clone());
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
    assert_eq!(user_rows(&db).await, 2);
}

#[tokio::test]
async fn required_azp_policy_without_parties_is_a_config_error() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    let config = ClerkConfig::builder()
        .issuer(issuer.issuer())
        .jwks_url(issuer.jwks_url())
        .build()
        .unwrap();
    let error = ClerkSync::builder(config, db.store())
        .authorized_party_policy(AuthorizedPartyPolicy::Required)
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "CLERK_AUTHORIZED_PARTIES");
}

#[tokio::test]
async fn session_and_ignore_categories_pass() {
    let db = MemoryUserStore::new();
    let Harness { issuer, router, .. } = Harness::start(&db, |b| b).await;
    let tokens = [
        issuer.token("user_session_cat"),
        issuer
            .token_for("user_no_cat")
            .without_header("cat")
            .build(),
        issuer
            .token_for("user_ignore_cat")
            .header("cat", "cl_I7d4PD111III")
            .build(),
    ];
    for token in &tokens {
        let reply = get_with_token(&router, "/me", Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(user_rows(&db).await, 3);
}

#[tokio::test]
async fn jwt_templates_are_accepted_only_after_opting_in() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    let template = issuer.template_for("user_template").build();

    // Refused by default: it would authenticate as the user for its whole (long) lifetime.
    let store = CountingStore::on(db.store());
    let strict = clerk(&issuer, store.clone(), |b| b);
    let router = app(&strict, db.clone());
    assert_rejected(
        &router,
        &db,
        &store,
        "template by default",
        Some(&template),
        StatusCode::UNAUTHORIZED,
        "invalid_token_category",
    )
    .await;

    let store = CountingStore::on(db.store());
    let opted_in = clerk(&issuer, store.clone(), |b| b.accept_jwt_templates());
    let router = app(&opted_in, db.clone());
    // Every other check still applies to templates.
    let cases = [
        (
            "expired template",
            issuer.template_for("user_template").expired_for(10).build(),
            "token_expired",
        ),
        (
            "template from another issuer",
            issuer
                .template_for("user_template")
                .claim("iss", "https://other.clerk.accounts.dev")
                .build(),
            "invalid_issuer",
        ),
        (
            "template with a machine subject",
            issuer.template_for("mch_template").build(),
            "token_type_not_accepted",
        ),
        (
            "template signed by another key",
            issuer
                .template_for("user_template")
                .wrong_signature()
                .build(),
            "invalid_signature",
        ),
    ];
    for (case, token, code) in &cases {
        assert_rejected(
            &router,
            &db,
            &store,
            case,
            Some(token),
            StatusCode::UNAUTHORIZED,
            code,
        )
        .await;
    }
    let reply = get_with_token(&router, "/me", Some(&template)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user_id"], "user_template");
    assert_eq!(reply.body["session_id"], serde_json::Value::Null);
    assert_eq!(user_rows(&db).await, 1);
}

/// `GET path` with only a `Cookie` header.
async fn get_with_cookie(router: &axum::Router, path: &str, cookie: &str) -> common::Reply {
    let request = Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

/// Sends `cookie` to `path` and checks the 401, its code and its challenge.
async fn assert_cookie_refused(router: &axum::Router, path: &str, cookie: &str, code: &str) {
    let reply = get_with_cookie(router, path, cookie).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{cookie}: {}",
        reply.body
    );
    assert_eq!(error_code(&reply), code, "{cookie}");
    assert!(
        reply.headers.contains_key(header::WWW_AUTHENTICATE),
        "{cookie}"
    );
}

#[tokio::test]
async fn session_cookies_follow_clerks_client_uat_rules() {
    let db = MemoryUserStore::new();
    let Harness {
        issuer,
        store,
        router,
        ..
    } = Harness::start(&db, |b| b).await;
    let iat = now() - 5;
    let token = issuer.token_for("user_cookie").issued_at(iat).build();

    let refused = [
        ("no __client_uat", format!("__session={token}")),
        (
            "signed out (0)",
            format!("__client_uat=0; __session={token}"),
        ),
        (
            "session changed after the token was minted",
            format!("__client_uat={}; __session={token}", iat + 1),
        ),
        (
            "not a number",
            format!("__client_uat=later; __session={token}"),
        ),
    ];
    for (case, cookie) in &refused {
        let reply = get_with_cookie(&router, "/me", cookie).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.body
        );
        assert_eq!(error_code(&reply), "session_outdated", "{case}");
        assert!(
            reply.headers.contains_key(header::WWW_AUTHENTICATE),
            "{case}"
        );
        // Under the optional layer a signed-out browser is anonymous.
        let reply = get_with_cookie(&router, "/anon", cookie).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}");
        assert_eq!(reply.body["user_id"], serde_json::Value::Null, "{case}");
    }
    assert_eq!(
        user_rows(&db).await,
        0,
        "nothing written for outdated cookies"
    );
    assert_eq!(store.calls(), 0);

    // client_uat at or before iat: signed in.
    for uat in [iat, iat - 100] {
        let reply = get_with_cookie(
            &router,
            "/me",
            &format!("__client_uat={uat}; __session={token}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(user_rows(&db).await, 1);

    // The session is cached now; signing out in the browser still signs out here.
    assert_cookie_refused(
        &router,
        "/me",
        &format!("__client_uat=0; __session={token}"),
        "session_outdated",
    )
    .await;
    assert_cookie_refused(
        &router,
        "/me",
        &format!("__client_uat={}; __session={token}", iat + 60),
        "session_outdated",
    )
    .await;
    let reply = get_with_cookie(
        &router,
        "/anon",
        &format!("__client_uat=0; __session={token}"),
    )
    .await;
    assert_eq!(reply.body["user_id"], serde_json::Value::Null);

    // Header tokens are not affected by the cookies.
    let request = Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::COOKIE, "__client_uat=0")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, request).await.status, StatusCode::OK);
}

#[tokio::test]
async fn duplicate_and_empty_session_cookies() {
    let db = MemoryUserStore::new();
    let Harness {
        issuer,
        store,
        router,
        ..
    } = Harness::start(&db, |b| b).await;
    let a = issuer.token("user_dup_a");
    let b = issuer.token("user_dup_b");
    let uat = now() - 30;
    assert_cookie_refused(
        &router,
        "/me",
        &format!("__client_uat={uat}; __session={a}; __session={b}"),
        "malformed_token",
    )
    .await;
    // The optional layer does not pick one either.
    assert_cookie_refused(
        &router,
        "/anon",
        &format!("__client_uat={uat}; __session={b}; __session={a}"),
        "malformed_token",
    )
    .await;
    assert_eq!(user_rows(&db).await, 0);
    assert_eq!(store.calls(), 0);

    // Machine tokens never count from a cookie, on either layer.
    let m2m = issuer
        .m2m_jwt_for("mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk")
        .build();
    for cookie in [
        format!("__client_uat={uat}; __session={m2m}"),
        format!("__client_uat={uat}; __session=ak_3beecc9c60adb5f9b850e91a8ee1e992"),
    ] {
        for path in ["/me", "/anon"] {
            assert_cookie_refused(&router, path, &cookie, "token_type_not_accepted").await;
        }
    }
    assert_eq!(user_rows(&db).await, 0);
    assert_eq!(store.calls(), 0);

    // An empty value is no cookie: anonymous, or missing_token on the required layer.
    let reply = get_with_cookie(&router, "/anon", &format!("__client_uat={uat}; __session=")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["user_id"], serde_json::Value::Null);
    let reply = get_with_cookie(&router, "/me", &format!("__client_uat={uat}; __session=")).await;
    assert_eq!(error_code(&reply), "missing_token");

    // The same value twice is one cookie.
    let reply = get_with_cookie(
        &router,
        "/me",
        &format!("__client_uat={uat}; __session={a}; __session={a}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn suffixed_cookies_are_read_when_their_client_uat_is_present() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    // The issuer and JWKS URL set explicitly win over the ones decoded from the key.
    let publishable_key = "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k";
    let suffix = "l2OS3d9k"; // base64url(SHA-1(key))[..8]
    let config = issuer
        .config()
        .publishable_key(publishable_key)
        .build()
        .unwrap();
    let clerk = ClerkSync::builder(config, db.store()).build().unwrap();
    let router = app(&clerk, db.clone());
    let uat = now() - 30;
    let mine = issuer.token("user_suffixed");
    let other_app = issuer.token("user_plain");

    let cookie = format!(
        "__session={other_app}; __client_uat={uat}; \
         __session_{suffix}={mine}; __client_uat_{suffix}={uat}"
    );
    let reply = get_with_cookie(&router, "/me", &cookie).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user_id"], "user_suffixed");

    // The suffixed client_uat says signed out: the plain cookies are not a fallback.
    let cookie = format!(
        "__session={other_app}; __client_uat={uat}; \
         __session_{suffix}={mine}; __client_uat_{suffix}=0"
    );
    let reply = get_with_cookie(&router, "/me", &cookie).await;
    assert_eq!(error_code(&reply), "session_outdated");

    // Two different suffixed session cookies are refused.
    let cookie = format!(
        "__session_{suffix}={other_app}; __session_{suffix}={mine}; __client_uat_{suffix}={uat}"
    );
    let reply = get_with_cookie(&router, "/me", &cookie).await;
    assert_eq!(error_code(&reply), "malformed_token");

    // Without a suffixed client_uat the plain names are read.
    let cookie = format!("__session={other_app}; __client_uat={uat}; __session_{suffix}={mine}");
    let reply = get_with_cookie(&router, "/me", &cookie).await;
    assert_eq!(reply.body["user_id"], "user_plain");
    let ids: Vec<String> = db.ids().await;
    assert_eq!(ids, ["user_plain", "user_suffixed"]);
}
