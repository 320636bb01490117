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
