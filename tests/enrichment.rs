//! Profile enrichment: after the upsert, a row without an email reads the user from the
//! Backend API (`FakeClerkApi`) once per cache lifetime, under a budget; API failures never fail
//! a request whose upsert succeeded.
#![allow(clippy::unwrap_used)]

mod common;

use clerk_sync::testing::{FakeClerkApi, Fault};
use std::time::{Duration, Instant};

use clerk_sync::store::UserStore;
use clerk_sync::{ClerkSync, PgUserStore, ProfileSource};
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
    // The next miss finds the email in the row: still one call.
    h.clerk.invalidate(&user).await.unwrap();
    let again = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
    assert_eq!(again.body["row_email"], "user3@example.com");
    assert_eq!(fake.user_requests(), 1);
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
async fn profile_source_claims_never_calls_and_api_ignores_claims(pool: PgPool) {
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

    let api_only = ClerkSync::builder(
        h.issuer.config().build().unwrap(),
        PgUserStore::new(pool.clone()),
    )
    .clerk_api(fake.client())
    .profile_source(ProfileSource::Api)
    .build()
    .unwrap();
    let router = common::app(&api_only, pool.clone());
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
async fn a_row_that_has_the_profile_never_costs_an_api_call(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    let user = FakeClerkApi::user_id(7);
    // The row came from a webhook or a backfill earlier.
    let mut known = clerk_sync::store::UserProfile::new(&user);
    known.email = Some("known@example.com".into());
    known.version_ms = Some(1_000);
    PgUserStore::new(pool.clone()).upsert(&known).await.unwrap();

    // Clerk's default token (no email claim), every cache miss: no API call.
    for round in 0..3 {
        let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["row_email"], "known@example.com");
        h.clerk.invalidate(&user).await.unwrap();
        assert_eq!(h.store.calls(), round + 1, "one statement per miss");
    }
    assert_eq!(fake.user_requests(), 0);
    assert_eq!(h.clerk.stats().api_fetches, 0);
}

#[sqlx::test(migrations = false)]
async fn a_new_user_costs_one_statement_two_when_the_api_fills_the_profile(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    let with_email = h
        .issuer
        .token_for("user_claims_email")
        .claim("email", "c@example.com")
        .build();
    assert_eq!(
        get_with_token(&h.router, "/me", Some(&with_email))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(h.store.calls(), 1);
    let reply = get_with_token(
        &h.router,
        "/me",
        Some(&h.issuer.token(&FakeClerkApi::user_id(8))),
    )
    .await;
    assert_eq!(reply.body["row_email"], "user8@example.com");
    assert_eq!(h.store.calls(), 3, "the upsert, then the profile write");
    assert_eq!(fake.user_requests(), 1);
}

#[sqlx::test(migrations = false)]
async fn api_failures_never_fail_a_request_whose_upsert_succeeded(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    let user = FakeClerkApi::user_id(5);
    // The request path retries once: two 500s make the fetch fail.
    fake.fail_next(2, Fault::ServerError(500));

    let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["synced"], true);
    assert_eq!(
        reply.body["row_email"],
        serde_json::Value::Null,
        "the row as the upsert wrote it"
    );
    assert_eq!(user_rows(&pool).await, 1);
    assert_eq!(h.clerk.stats().api_failures, 1);
    assert_eq!(fake.user_requests(), 2, "one attempt and one retry");

    // Cached: the next requests cost nothing until the next miss, which tries again.
    let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(fake.user_requests(), 2);
    h.clerk.invalidate(&user).await.unwrap();
    let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token(&user))).await;
    assert_eq!(reply.body["row_email"], "user5@example.com");
    assert_eq!(fake.user_requests(), 3);
}

#[sqlx::test(migrations = false)]
async fn a_slow_api_is_cut_at_the_sync_timeout(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b.sync_timeout(Duration::from_millis(300))).await;
    fake.set_latency(Duration::from_secs(3));
    let started = Instant::now();
    let reply = get_with_token(
        &h.router,
        "/me",
        Some(&h.issuer.token(&FakeClerkApi::user_id(4))),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["row_email"], serde_json::Value::Null);
    assert!(
        elapsed < Duration::from_millis(1500),
        "answered after {elapsed:?}"
    );
    assert_eq!(user_rows(&pool).await, 1);
    assert_eq!(h.clerk.stats().api_failures, 1);
}

#[sqlx::test(migrations = false)]
async fn clerks_404_for_the_tokens_own_instance_is_403_until_the_token_expires(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    // The secret key belongs to the tokens' instance: the Backend JWKS has their kid.
    fake.set_jwks(h.issuer.jwks());
    let token = h.issuer.token("user_gone_from_clerk");

    let reply = get_with_token(&h.router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(error_code(&reply), "user_deleted");
    assert_eq!(fake.user_requests(), 1);
    // The row the upsert wrote stays, without a tombstone.
    let deleted: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NOT NULL FROM users WHERE id = 'user_gone_from_clerk'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!deleted, "no tombstone from a 404");

    // Retries, with the same or a new token, cost no more calls.
    for token in [token.clone(), h.issuer.token("user_gone_from_clerk")] {
        let reply = get_with_token(&h.router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(error_code(&reply), "user_deleted");
    }
    assert_eq!(fake.user_requests(), 1);
    assert_eq!(h.store.calls(), 1);
}

#[sqlx::test(migrations = false)]
async fn a_404_from_another_instances_secret_key_is_not_trusted(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b).await;
    // The fake's JWKS does not hold the issuer's kid: another instance's secret key.
    let reply = get_with_token(&h.router, "/me", Some(&h.issuer.token("user_elsewhere"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["synced"], true);
    assert_eq!(h.clerk.stats().api_failures, 1);
    assert_eq!(fake.jwks_requests(), 1);
}

#[sqlx::test(migrations = false)]
async fn the_enrichment_budget_bounds_api_calls(pool: PgPool) {
    let fake = FakeClerkApi::start(10).await.unwrap();
    let h = harness(&pool, &fake, |b| b.enrichment_budget(0, 2)).await;
    for i in 0..4 {
        let reply = get_with_token(
            &h.router,
            "/me",
            Some(&h.issuer.token(&FakeClerkApi::user_id(i))),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let expected = if i < 2 {
            serde_json::Value::from(FakeClerkApi::email(i))
        } else {
            serde_json::Value::Null
        };
        assert_eq!(reply.body["row_email"], expected, "user {i}");
    }
    assert_eq!(fake.user_requests(), 2);
    assert_eq!(h.clerk.stats().api_budget_skips, 2);
    assert_eq!(user_rows(&pool).await, 4);
}

#[tokio::test]
async fn api_profiles_need_a_secret_key() {
    let issuer = clerk_sync::testing::DevIssuer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = clerk_sync::SqliteUserStore::open(dir.path().join("u.db").to_str().unwrap())
        .await
        .unwrap();
    let error = ClerkSync::builder(issuer.config().build().unwrap(), store)
        .profile_source(ProfileSource::Api)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("CLERK_SECRET_KEY"), "{error}");
}
