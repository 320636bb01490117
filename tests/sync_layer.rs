//! The layer against real PostgreSQL: the row exists before the handler runs, repeats are free,
//! concurrent first requests share one upsert, deleted users stay deleted.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkUser, PgUserStore};
use common::{Harness, app, clerk, error_code, get_with_token, send, user_rows};
use http::{Request, StatusCode, header};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tower::ServiceBuilder;

#[sqlx::test(migrations = false)]
async fn first_request_creates_the_row_before_the_handler_runs(pool: PgPool) {
    let Harness {
        issuer,
        store,
        router,
        ..
    } = Harness::start(&pool, |b| b).await;

    let token = issuer
        .token_for("user_first")
        .claim("email", "first@example.com")
        .build();
    let reply = get_with_token(&router, "/me", Some(&token)).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user_id"], "user_first");
    assert_eq!(reply.body["tier"], "free");
    assert_eq!(reply.body["synced"], true);
    assert!(
        reply.body["session_id"]
            .as_str()
            .unwrap()
            .starts_with("sess_")
    );
    // Read by the handler from the database: the row was there before it ran.
    assert_eq!(reply.body["row_tier"], "free");
    assert_eq!(reply.body["row_email"], "first@example.com");
    assert_eq!(store.calls(), 1);
}

#[sqlx::test(migrations = false)]
async fn repeated_token_does_no_sql_and_no_signature_check(pool: PgPool) {
    let Harness {
        issuer,
        store,
        clerk,
        router,
    } = Harness::start(&pool, |b| b).await;
    let token = issuer.token("user_repeat");

    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    let after_first = clerk.stats();
    assert_eq!(after_first.tokens_verified, 1);
    assert_eq!(after_first.upserts_ok, 1);

    for _ in 0..5 {
        assert_eq!(
            get_with_token(&router, "/me", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    let stats = clerk.stats();
    assert_eq!(stats.tokens_verified, 1, "no second RSA verification");
    assert_eq!(stats.token_cache_hits, 5);
    assert_eq!(stats.user_cache_hits, 5);
    assert_eq!(stats.upserts_ok, 1, "no second upsert");
    assert_eq!(store.calls(), 1, "no SQL reached the store");
}

#[sqlx::test(migrations = false)]
async fn new_token_for_a_synced_user_verifies_but_does_not_upsert(pool: PgPool) {
    let Harness {
        issuer,
        store,
        clerk,
        router,
    } = Harness::start(&pool, |b| b).await;

    for _ in 0..3 {
        let token = issuer.token("user_refreshing");
        assert_eq!(
            get_with_token(&router, "/me", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(clerk.stats().tokens_verified, 3);
    assert_eq!(store.calls(), 1);
}

#[sqlx::test(migrations = false)]
async fn concurrent_first_requests_run_one_upsert_per_user(pool: PgPool) {
    let Harness {
        issuer,
        store,
        clerk,
        router,
    } = Harness::start(&pool, |b| b).await;

    // 200 requests, 10 per user, each with its own fresh token.
    let mut requests = JoinSet::new();
    for i in 0..200 {
        let token = issuer.token(&format!("user_concurrent_{}", i % 20));
        let router = router.clone();
        requests.spawn(async move { get_with_token(&router, "/me", Some(&token)).await.status });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(store.calls(), 20, "one upsert per user");
    assert_eq!(clerk.stats().upserts_ok, 20);
    assert_eq!(user_rows(&pool).await, 20);
}

#[sqlx::test(migrations = false)]
async fn deleted_user_gets_403_and_the_row_is_unchanged(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, tier, deleted_at, updated_at) \
         VALUES ('user_gone', NULL, 'pro', '2026-01-01Z', '2026-01-01Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before: String = sqlx::query_scalar("SELECT row_to_json(users)::text FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(pool.clone()), |b| b);
    let router = app(&clerk, pool.clone());

    let token = issuer
        .token_for("user_gone")
        .claim("email", "back@example.com")
        .build();
    for _ in 0..2 {
        let reply = get_with_token(&router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(error_code(&reply), "user_deleted");
    }
    let after: String = sqlx::query_scalar("SELECT row_to_json(users)::text FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(before, after, "a deleted user is never resurrected");
    assert_eq!(clerk.stats().rejected("user_deleted"), 2);
}

#[sqlx::test(migrations = false)]
async fn session_cookie_authenticates_like_the_header(pool: PgPool) {
    let Harness { issuer, router, .. } = Harness::start(&pool, |b| b).await;

    let request = Request::get("/me")
        .header(
            header::COOKIE,
            format!(
                "__client_uat=1700000000; __session={}",
                issuer.token("user_cookie")
            ),
        )
        .body(Body::empty())
        .unwrap();
    let reply = send(&router, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["row_tier"], "free");

    let lower = Request::get("/me")
        .header(
            header::AUTHORIZATION,
            format!("bearer {}", issuer.token("user_lower")),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, lower).await.status, StatusCode::OK);
    assert_eq!(user_rows(&pool).await, 2);
}

#[sqlx::test(migrations = false)]
async fn optional_layer_passes_anonymous_requests_but_not_bad_tokens(pool: PgPool) {
    let Harness { issuer, router, .. } = Harness::start(&pool, |b| b).await;

    let anonymous = get_with_token(&router, "/anon", None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.body["user_id"], serde_json::Value::Null);

    let signed_in = get_with_token(&router, "/anon", Some(&issuer.token("user_opt"))).await;
    assert_eq!(signed_in.body["user_id"], "user_opt");

    let expired = issuer.token_for("user_opt2").expired_for(30).build();
    let reply = get_with_token(&router, "/anon", Some(&expired)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&reply), "token_expired");
    assert_eq!(user_rows(&pool).await, 1);
}

#[sqlx::test(migrations = false)]
async fn extractor_without_the_layer_says_how_to_fix_it(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let router = Router::new().route(
        "/me",
        get(|user: ClerkUser| async move { user.user_id().to_owned() }),
    );
    let reply = get_with_token(&router, "/me", Some("a.b.c")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&reply), "clerk_layer_missing");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("ClerkSyncLayer")
    );
    assert_eq!(user_rows(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn layer_works_inside_a_service_builder(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(pool.clone()), |b| b);
    let router = Router::new()
        .route(
            "/me",
            get(|user: ClerkUser| async move { user.tier().to_owned() }),
        )
        .layer(ServiceBuilder::new().layer(clerk.layer()));
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_sb"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(user_rows(&pool).await, 1);
}

#[sqlx::test(migrations = false)]
async fn tier_changes_apply_after_invalidate(pool: PgPool) {
    let Harness {
        issuer,
        clerk,
        router,
        ..
    } = Harness::start(&pool, |b| b).await;
    let token = issuer.token("user_upgrade");
    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.body["tier"],
        "free"
    );

    sqlx::query("UPDATE users SET tier = 'pro' WHERE id = 'user_upgrade'")
        .execute(&pool)
        .await
        .unwrap();
    // Cached until told otherwise...
    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.body["tier"],
        "free"
    );
    clerk.invalidate("user_upgrade").await.unwrap();
    // ...and the upsert returns the stored tier without changing it.
    let reply = get_with_token(&router, "/me", Some(&token)).await;
    assert_eq!(reply.body["tier"], "pro");
    assert_eq!(reply.body["row_tier"], "pro");
}

#[sqlx::test(migrations = false)]
async fn token_cache_capacity_zero_verifies_every_request(pool: PgPool) {
    let Harness {
        issuer,
        store,
        clerk,
        router,
    } = Harness::start(&pool, |b| b.token_cache_capacity(0)).await;
    let token = issuer.token("user_nocache");
    for _ in 0..3 {
        assert_eq!(
            get_with_token(&router, "/me", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    let stats = clerk.stats();
    assert_eq!((stats.tokens_verified, stats.token_cache_hits), (3, 0));
    assert_eq!(clerk.verifier().cached_tokens(), 0);
    assert_eq!(store.calls(), 1, "the user cache still works");
}
