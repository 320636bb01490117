//! The Backend API client against `FakeClerkApi`: parsing Clerk's user object, cursor paging,
//! the retry rules (429 waits for `Retry-After`, 5xx backs off, other 4xx fail at once), and
//! the Backend JWKS as the verifier's key source.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clerk_sync::testing::{DevIssuer, FakeClerkApi, Fault};
use clerk_sync::{ApiError, ClerkApi, ClerkConfig, Verifier};
use http::StatusCode;

#[tokio::test]
async fn get_user_reads_the_primary_email_names_and_version() {
    let fake = FakeClerkApi::start(20).await.unwrap();
    let api = fake.client();

    // User 3 has two addresses; the primary one is the second.
    let user = api.get_user(&FakeClerkApi::user_id(3)).await.unwrap();
    assert_eq!(user.id, FakeClerkApi::user_id(3));
    assert_eq!(user.email.as_deref(), Some("user3@example.com"));
    assert_eq!(user.first_name.as_deref(), Some("User3"));
    assert_eq!(user.last_name.as_deref(), Some("Example"));
    assert_eq!(user.username.as_deref(), Some("user3"));
    assert_eq!(
        user.image_url.as_deref(),
        Some("https://img.clerk.com/fake/3")
    );
    assert_eq!(user.version_ms, Some(fake.updated_at_ms(3)));

    // User 10 has `null` username and last name: nullable fields stay unknown.
    let sparse = api.get_user(&FakeClerkApi::user_id(10)).await.unwrap();
    assert_eq!(sparse.username, None);
    assert_eq!(sparse.last_name, None);
    assert_eq!(sparse.email.as_deref(), Some("user10@example.com"));
    assert_eq!(fake.user_requests(), 2);
}

#[tokio::test]
async fn client_errors_fail_at_once_with_clerks_message() {
    let fake = FakeClerkApi::start(5).await.unwrap();

    let missing = fake.client().get_user("user_nobody").await.unwrap_err();
    match &missing {
        ApiError::Rejected { status, message } => {
            assert_eq!(*status, StatusCode::NOT_FOUND);
            assert!(message.contains("resource_not_found"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(fake.user_requests(), 1, "a 404 is not retried");

    let wrong_key = ClerkApi::new(&fake.url(), "sk_test_wrong").unwrap();
    let error = wrong_key
        .list_users(10, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("401") && error.contains("authentication_invalid"),
        "{error}"
    );
    assert!(
        !error.contains("sk_test_wrong"),
        "the key never appears in errors"
    );
    assert_eq!(fake.list_requests(), 1, "a 401 is not retried");

    // The spec's 422: a cursor cannot be combined with another ordering.
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/users?order_by=-updated_at&starting_after={}",
            fake.url(),
            FakeClerkApi::user_id(1)
        ))
        .bearer_auth(FakeClerkApi::SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "form_param_value_invalid");
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_then_succeeds() {
    let fake = FakeClerkApi::start(5).await.unwrap();
    fake.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );

    let started = Instant::now();
    let page = fake.client().list_users(10, None).await.unwrap();
    let waited = started.elapsed();

    assert_eq!(page.users.len(), 5);
    assert_eq!(fake.list_requests(), 2);
    assert_eq!(fake.faults_served(), 1);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After honoured: {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn server_errors_retry_with_backoff_until_the_budget_ends() {
    let fake = FakeClerkApi::start(5).await.unwrap();
    fake.fail_next(2, Fault::ServerError(502));
    let page = fake.client().list_users(10, None).await.unwrap();
    assert_eq!(page.users.len(), 5, "two 502s, then success");
    assert_eq!(fake.list_requests(), 3);

    fake.fail_next(100, Fault::ServerError(503));
    let error = fake.client().list_users(10, None).await.unwrap_err();
    match error {
        ApiError::Unavailable { attempts, last } => {
            assert_eq!(attempts, 4, "1 attempt + 3 retries");
            assert!(
                last.contains("503") && last.contains("internal_clerk_error"),
                "{last}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.list_requests(), 3 + 4);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    // A port that was just free: connections are refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let api = ClerkApi::new(&format!("http://127.0.0.1:{port}"), "sk_test_x")
        .unwrap()
        .with_retry(clerk_sync::clerk_api::RetryPolicy::new(
            2,
            Duration::from_millis(5),
            Duration::from_millis(50),
        ));
    match api.get_user("user_1").await.unwrap_err() {
        ApiError::Unavailable { attempts, .. } => assert_eq!(attempts, 3),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn cursor_pages_walk_newest_first_without_gaps_or_repeats() {
    let fake = FakeClerkApi::start(25).await.unwrap();
    let api = fake.client();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = api.list_users(10, cursor.as_deref()).await.unwrap();
        let count = page.users.len();
        seen.extend(page.users.into_iter().map(|u| u.id));
        cursor = page.last_id;
        if count < 10 {
            break;
        }
    }
    let expected: Vec<String> = (0..25).rev().map(FakeClerkApi::user_id).collect();
    assert_eq!(seen, expected);
    assert_eq!(fake.list_requests(), 3);

    // `limit` above Clerk's maximum is clamped, not sent.
    let all = api.list_users(10_000, None).await.unwrap();
    assert_eq!(all.users.len(), 25);
}

#[tokio::test]
async fn backend_jwks_is_a_key_source_for_the_verifier() {
    let issuer = DevIssuer::start().await.unwrap();
    let fake = FakeClerkApi::start(1).await.unwrap();
    fake.set_jwks(issuer.jwks());
    let config = ClerkConfig::builder()
        .issuer(issuer.issuer())
        .secret_key(FakeClerkApi::SECRET_KEY)
        .api_url(fake.url())
        .build()
        .unwrap();
    let verifier = Verifier::from_config(&config).unwrap();

    let claims = verifier.verify(&issuer.token("user_jwks")).await.unwrap();
    assert_eq!(claims.sub, "user_jwks");
    assert_eq!(
        fake.jwks_requests(),
        1,
        "fetched with the secret key from /v1/jwks"
    );
    assert_eq!(issuer.jwks_fetches(), 0, "the Frontend JWKS was not used");

    let forged = issuer.token_for("user_jwks").wrong_signature().build();
    assert_eq!(
        verifier.verify(&forged).await.unwrap_err().code(),
        "invalid_signature"
    );
}

/// The three verify endpoints, called as Clerk's JS SDK calls them (no `/v1`).
#[tokio::test]
async fn machine_tokens_are_verified_by_the_backend_api_and_refusals_read_from_the_answer() {
    use clerk_sync::TokenType;
    use clerk_sync::machine::Verdict;

    let fake = FakeClerkApi::start(0).await.unwrap();
    let api = fake.client();
    let user = "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
    fake.add_machine_token(
        "ak_good",
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(user),
    );
    let machine = "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk";
    fake.add_machine_token(
        "mt_good",
        TokenType::M2mToken,
        FakeClerkApi::m2m_answer(machine),
    );
    fake.add_machine_token(
        "oat_good",
        TokenType::OAuthToken,
        FakeClerkApi::oauth_answer(user),
    );

    let Verdict::Valid(key) = api
        .verify_machine_token(TokenType::ApiKey, "ak_good")
        .await
        .unwrap()
    else {
        panic!("a valid API key");
    };
    assert_eq!(
        (key.token_type, key.subject.as_str()),
        (TokenType::ApiKey, user)
    );
    assert_eq!(key.scopes, ["read", "write"]);
    assert!(
        key.id.starts_with("ak_") && key.id.len() == 35,
        "{}",
        key.id
    );
    let Verdict::Valid(m2m) = api
        .verify_machine_token(TokenType::M2mToken, "mt_good")
        .await
        .unwrap()
    else {
        panic!("a valid M2M token");
    };
    assert_eq!(m2m.subject, machine);
    let Verdict::Valid(oauth) = api
        .verify_machine_token(TokenType::OAuthToken, "oat_good")
        .await
        .unwrap()
    else {
        panic!("a valid OAuth token");
    };
    assert_eq!(
        oauth.client_id.as_deref(),
        Some("client_2fakeOAuthApplication000000")
    );

    // Unknown tokens: 404 for keys and M2M, 200 {"active": false} for OAuth; a token of one
    // type sent to another type's endpoint is unknown there.
    for (kind, secret) in [
        (TokenType::ApiKey, "ak_unknown"),
        (TokenType::M2mToken, "mt_unknown"),
        (TokenType::OAuthToken, "oat_unknown"),
        (TokenType::ApiKey, "mt_good"),
    ] {
        assert_eq!(
            api.verify_machine_token(kind, secret).await.unwrap(),
            Verdict::Invalid,
            "{secret}"
        );
    }

    // A 200 that says revoked or expired, or whose expiration has passed, is refused.
    let mut revoked = FakeClerkApi::api_key_answer(user);
    revoked["revoked"] = true.into();
    revoked["revocation_reason"] = "leaked".into();
    fake.add_machine_token("ak_revoked", TokenType::ApiKey, revoked);
    let mut expired = FakeClerkApi::m2m_answer(machine);
    expired["expired"] = true.into();
    fake.add_machine_token("mt_expired", TokenType::M2mToken, expired);
    let mut past = FakeClerkApi::api_key_answer(user);
    past["expiration"] = 1_716_883_200_000_i64.into();
    fake.add_machine_token("ak_past", TokenType::ApiKey, past);
    assert_eq!(
        api.verify_machine_token(TokenType::ApiKey, "ak_revoked")
            .await
            .unwrap(),
        Verdict::Revoked
    );
    assert_eq!(
        api.verify_machine_token(TokenType::M2mToken, "mt_expired")
            .await
            .unwrap(),
        Verdict::Expired
    );
    assert_eq!(
        api.verify_machine_token(TokenType::ApiKey, "ak_past")
            .await
            .unwrap(),
        Verdict::Expired
    );

    // Every call went to the unversioned paths, and was counted per endpoint.
    assert_eq!(fake.verify_requests(TokenType::ApiKey), 5);
    assert_eq!(fake.verify_requests(TokenType::M2mToken), 3);
    assert_eq!(fake.verify_requests(TokenType::OAuthToken), 2);
    assert_eq!(fake.unversioned_verify_requests(), 10);

    // The spec's `/v1` spelling is served too.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/api_keys/verify", fake.url()))
        .bearer_auth(FakeClerkApi::SECRET_KEY)
        .json(&serde_json::json!({"secret": "ak_good"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(fake.unversioned_verify_requests(), 10);
    assert_eq!(fake.verify_requests(TokenType::ApiKey), 6);
}

#[tokio::test]
async fn machine_verification_failures_are_errors_never_verdicts() {
    use clerk_sync::TokenType;

    let fake = FakeClerkApi::start(0).await.unwrap();
    let api = fake
        .client()
        .with_retry(clerk_sync::clerk_api::RetryPolicy::none());
    // Clerk is rate limiting or down: an error to answer 503 with, not "invalid".
    fake.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    assert!(matches!(
        api.verify_machine_token(TokenType::ApiKey, "ak_x").await,
        Err(ApiError::Unavailable { .. })
    ));
    fake.fail_next(1, Fault::ServerError(502));
    assert!(matches!(
        api.verify_machine_token(TokenType::M2mToken, "mt_x").await,
        Err(ApiError::Unavailable { .. })
    ));
    // A wrong secret key: 401 from Clerk, a configuration error.
    let wrong = ClerkApi::new(&fake.url(), "sk_test_wrong")
        .unwrap()
        .with_retry(clerk_sync::clerk_api::RetryPolicy::none());
    assert!(matches!(
        wrong.verify_machine_token(TokenType::OAuthToken, "oat_x").await,
        Err(ApiError::Rejected { status, .. }) if status == StatusCode::UNAUTHORIZED
    ));
    // Session tokens are never sent.
    assert!(
        api.verify_machine_token(TokenType::SessionToken, "eyJ.x.y")
            .await
            .is_err()
    );
    assert_eq!(fake.verify_requests(TokenType::ApiKey), 1);
    assert_eq!(fake.verify_requests(TokenType::M2mToken), 1);
    assert_eq!(fake.verify_requests(TokenType::OAuthToken), 1);
}
