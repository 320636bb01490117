//! Profile enrichment: a sync miss whose token carries no email reads the user from the
//! Backend API (`FakeClerkApi`) once; API failures follow the layer's failure policy.
#![allow(clippy::unwrap_used)]

mod common;

use clerk_sync::testing::{FakeClerkApi, Fault};
use clerk_sync::{ClerkSync, FailurePolicy, PgUserStore, ProfileSource};
use common::{Harness, error_code, get_with_token, user_rows};
use http::StatusCode;
use sqlx::PgPool;

async fn harness(
    pool: &PgPool,
    fake: &FakeClerkApi,
    tweak: impl FnOnce(clerk_sync::ClerkSyncBuilder) -> clerk_sync::ClerkSyncBuilder,
) -> Harness {
    let api = fake.client();
    Harness::start(pool, move |builder| tweak(builder.clerk_api(api))).await
}

async fn row(pool: &PgPool, id: &str) -> (Option<String>, Option<String>, i64) {
    sqlx::query_as(
        "SELECT email, first_name, (extract(epoch FROM clerk_updated_at) * 1000)::bigint \
         FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_token_without_email_is_enriched_once_from_the_backend_api(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    let user = FakeClerkApi::user_id(3);

    let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["row_email"], "user3@example.com",
        "the handler sees the email"
    );
    assert_eq!(fake.user_requests(), 1);
    let (email, first_name, version) = row(&pool, &user).await;
    assert_eq!(email.as_deref(), Some("user3@example.com"));
    assert_eq!(first_name.as_deref(), Some("User3"));
    assert_eq!(
        version,
        fake.updated_at_ms(3),
        "versioned by Clerk's updated_at"
    );

    // Same user, a new token: synced-user cache hit, no API call.
    let again = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(fake.user_requests(), 1);
    assert_eq!(h.clerk.stats().api_fetches, 1);
}

#[sqlx::test(migrations = false)]
async fn a_token_with_an_email_claim_needs_no_api_call(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    let token = h
        .issuer
        .token_for(&FakeClerkApi::user_id(4))
        .claim("email", "claims@example.com")
        .build();
    let reply = get_with_token(&h.router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["row_email"], "claims@example.com");
    assert_eq!(fake.user_requests(), 0);
}

#[sqlx::test(migrations = false)]
async fn profile_source_claims_never_calls_and_api_always_calls(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b.profile_source(ProfileSource::Claims)).await;
    let reply = get_with_token(
        &h.router,
        "/me",
        Some(&h.issuer.token(&FakeClerkApi::user_id(1))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["row_email"], serde_json::Value::Null);
    assert_eq!(fake.user_requests(), 0);

    let always = ClerkSync::builder(h.issuer.config().build().unwrap())
        .store(PgUserStore::new(pool.clone()))
        .clerk_api(fake.client())
        .profile_source(ProfileSource::Api)
        .build()
        .unwrap();
    let router = common::app(&always, pool.clone());
    let token = h
        .issuer
        .token_for(&FakeClerkApi::user_id(2))
        .claim("email", "ignored@example.com")
        .build();
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body["row_email"], "user2@example.com",
        "the API wins over claims"
    );
    assert_eq!(fake.user_requests(), 1);
}

#[sqlx::test(migrations = false)]
async fn api_failures_fail_closed_with_503_and_write_nothing(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    // The request path retries once: two 500s make the fetch fail.
    fake.fail_next(2, Fault::ServerError(500));

    let reply = get_with_token(
        &h.router,
        "/me",
        Some(&h.issuer.token(&FakeClerkApi::user_id(5))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "sync_unavailable");
    assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
    assert_eq!(user_rows(&pool).await, 0, "nothing written");
    assert_eq!(h.store.calls(), 0, "the store was not reached");
    assert_eq!(h.clerk.stats().api_failures, 1);
    assert_eq!(fake.user_requests(), 2, "one attempt and one retry");

    // Unknown to Clerk (404): the same policy, no retry loop.
    let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token("user_not_in_clerk"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(user_rows(&pool).await, 0);

    assert_eq!(fake.user_requests(), 3, "a 404 is not retried");

    // Errors are not cached: now that Clerk answers again, the next request syncs.
    let reply = get_with_token(
        &h.router,
        "/me",
        Some(&h.issuer.token(&FakeClerkApi::user_id(5))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["row_email"], "user5@example.com");
}

#[sqlx::test(migrations = false)]
async fn api_failures_fail_open_when_configured(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b.failure_policy(FailurePolicy::Open)).await;
    fake.fail_next(100, Fault::ServerError(502));
    let reply = get_with_token(
        &h.router,
        "/me",
        Some(&h.issuer.token(&FakeClerkApi::user_id(6))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["synced"], false);
    assert_eq!(user_rows(&pool).await, 0);
}

#[tokio::test]
async fn api_profiles_need_a_secret_key() {
    let issuer = clerk_sync::testing::DevIssuer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = clerk_sync::SqliteUserStore::open(dir.path().join("u.db").to_str().unwrap())
        .await
        .unwrap();
    let error = ClerkSync::builder(issuer.config().build().unwrap())
        .store(store)
        .profile_source(ProfileSource::Api)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("CLERK_SECRET_KEY"), "{error}");
}
