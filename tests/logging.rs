//! Log lines carry user ids and rejection codes, never token bytes.
#![allow(clippy::unwrap_used)]

mod common;

use clerk_sync::MemoryUserStore;
use common::{Capture, Harness, get_with_token};

#[tokio::test]
async fn logs_name_users_and_codes_but_never_tokens() {
    let db = MemoryUserStore::new();
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber());

    let Harness { issuer, router, .. } = Harness::start(&db, |b| b).await;
    let good = issuer
        .token_for("user_logged")
        .claim("email", "l@example.com")
        .build();
    let expired = issuer.token_for("user_logged").expired_for(30).build();
    let forged = issuer.token_for("user_logged").wrong_signature().build();
    for token in [&good, &good, &expired, &forged] {
        get_with_token(&router, "/me", Some(token)).await;
    }

    let logs = capture.text();
    assert!(logs.contains("user_logged"), "user ids are logged:\n{logs}");
    assert!(logs.contains("token_expired") && logs.contains("invalid_signature"));
    for token in [&good, &expired, &forged] {
        for part in token.split('.') {
            assert!(
                !logs.contains(part),
                "a token part reached the logs:\n{logs}"
            );
        }
    }
}

#[tokio::test]
async fn machine_token_secrets_never_reach_the_logs() {
    use axum::Router;
    use axum::routing::get;
    use clerk_sync::testing::{FakeClerkApi, Fault};
    use clerk_sync::{ClerkPrincipal, TokenType};

    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let issuer = clerk_sync::testing::DevIssuer::start().await.unwrap();
    let fake = FakeClerkApi::start(1).await.unwrap();
    let api = fake.client();
    let clerk = common::clerk(&issuer, MemoryUserStore::new(), |b| b.clerk_api(api));
    let router = Router::new()
        .route(
            "/api",
            get(|caller: ClerkPrincipal| async move { caller.subject().to_owned() }),
        )
        .layer(clerk.layer().accepts_any());
    let secret = "ak_5ecre7000000000000000000000000000";
    fake.add_machine_token(
        secret,
        TokenType::ApiKey,
        FakeClerkApi::api_key_answer(&FakeClerkApi::user_id(0)),
    );
    let unknown = "mt_unkn0wn0000000000000000000000000";
    // Valid, unknown, and a Backend API failure (logged at warn).
    fake.fail_next(1, Fault::ServerError(500));
    for token in [secret, secret, secret, unknown] {
        get_with_token(&router, "/api", Some(token)).await;
    }
    let logs = capture.text();
    assert!(logs.contains("verification_unavailable"), "{logs}");
    for token in [secret, unknown] {
        assert!(
            !logs.contains(token),
            "a machine token reached the logs:\n{logs}"
        );
    }
}
