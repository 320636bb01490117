//! Signing keys: rotation, floods of unknown `kid`s, JWKS outages, and the networkless PEM key.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use clerk_sync::testing::DevIssuer;
use clerk_sync::{ClerkConfig, ClerkSync, MemoryUserStore};
use common::{Harness, TestDb, app, clerk, error_code, get_with_token, user_rows};
use http::{StatusCode, header};
use tokio::task::JoinSet;

#[tokio::test]
async fn rotated_key_is_accepted_after_one_refetch() {
    let db = MemoryUserStore::new();
    let Harness {
        issuer,
        clerk,
        router,
        ..
    } = Harness::start(&db, |b| {
        b.jwks_min_refresh_interval(Duration::from_millis(300))
    })
    .await;

    let old = issuer.token("user_old_key");
    assert_eq!(
        get_with_token(&router, "/me", Some(&old)).await.status,
        StatusCode::OK
    );
    assert_eq!(issuer.jwks_fetches(), 1);

    let new_kid = issuer.rotate_key().unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let new = issuer.token("user_new_key");
    assert!(new.len() > 10 && issuer.kid() == new_kid);
    let reply = get_with_token(&router, "/me", Some(&new)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        issuer.jwks_fetches(),
        2,
        "exactly one refetch for the new kid"
    );

    // The old key is still published, so fresh tokens signed with it keep working.
    assert_eq!(clerk.stats().jwks_fetches, 2);
}

#[tokio::test]
async fn random_kids_cause_at_most_one_fetch_per_interval() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    let interval = Duration::from_secs(2);
    let clerk = clerk(&issuer, db.store(), |b| {
        b.jwks_min_refresh_interval(interval)
    });
    let router = app(&clerk, db.clone());
    assert_eq!(
        get_with_token(&router, "/me", Some(&issuer.token("user_ok")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(issuer.jwks_fetches(), 1);

    let flood = |round: usize| {
        let mut requests = JoinSet::new();
        for i in 0..100 {
            let token = issuer
                .token_for("user_attacker")
                .header("kid", format!("ins_random_{round}_{i}"))
                .build();
            let router = router.clone();
            requests.spawn(async move { get_with_token(&router, "/me", Some(&token)).await });
        }
        requests
    };

    // Within the interval of the first fetch: no fetch at all.
    let mut requests = flood(1);
    while let Some(reply) = requests.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&reply), "unknown_key");
    }
    assert_eq!(issuer.jwks_fetches(), 1);

    // After the interval: the whole flood shares one fetch.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let mut requests = flood(2);
    while let Some(reply) = requests.join_next().await {
        assert_eq!(error_code(&reply.unwrap()), "unknown_key");
    }
    assert_eq!(issuer.jwks_fetches(), 2);
    assert_eq!(clerk.stats().rejected("unknown_key"), 200);
    assert_eq!(user_rows(&db).await, 1, "only the legitimate user");
}

#[tokio::test]
async fn known_keys_keep_working_when_the_jwks_goes_down() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    // Every lookup finds the key set stale and tries to refresh it.
    let clerk = clerk(&issuer, db.store(), |b| {
        b.jwks_min_refresh_interval(Duration::ZERO)
            .jwks_max_age(Duration::ZERO)
            .jwks_timeout(Duration::from_millis(500))
    });
    let router = app(&clerk, db.clone());
    assert_eq!(
        get_with_token(&router, "/me", Some(&issuer.token("user_before")))
            .await
            .status,
        StatusCode::OK
    );

    issuer.stop_jwks();
    for i in 0..3 {
        let token = issuer.token(&format!("user_during_{i}"));
        let reply = get_with_token(&router, "/me", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let stats = clerk.stats();
    assert!(
        stats.jwks_fetch_failures >= 3,
        "refreshes were tried: {stats:?}"
    );
    assert_eq!(user_rows(&db).await, 4);
}

#[tokio::test]
async fn unreachable_jwks_with_no_cached_keys_is_503() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    issuer.stop_jwks();
    let clerk = clerk(&issuer, db.store(), |b| {
        b.jwks_timeout(Duration::from_millis(500))
    });
    let router = app(&clerk, db.clone());

    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_x"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "keys_unavailable");
    assert_eq!(reply.headers[header::RETRY_AFTER], "10");
    assert!(!reply.headers.contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(user_rows(&db).await, 0);
    assert_eq!(clerk.stats().jwks_fetch_failures, 1);
}

#[tokio::test]
async fn pem_key_verifies_without_any_network() {
    let db = MemoryUserStore::new();
    let issuer = DevIssuer::start().await.unwrap();
    let config = ClerkConfig::builder()
        .jwt_key_pem(issuer.public_key_pem())
        .issuer(issuer.issuer())
        .build()
        .unwrap();
    let clerk = ClerkSync::builder(config, db.store()).build().unwrap();
    let router = app(&clerk, db.clone());

    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_pem"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let forged = issuer.token_for("user_forged").wrong_signature().build();
    let reply = get_with_token(&router, "/me", Some(&forged)).await;
    assert_eq!(error_code(&reply), "invalid_signature");
    assert_eq!(issuer.jwks_fetches(), 0);
    assert_eq!(user_rows(&db).await, 1);
}

#[tokio::test]
async fn a_cached_session_stops_being_a_hit_when_its_key_leaves_the_jwks() {
    let db = MemoryUserStore::new();
    let Harness {
        issuer,
        clerk,
        router,
        ..
    } = Harness::start(&db, |b| {
        b.jwks_min_refresh_interval(Duration::from_millis(200))
    })
    .await;
    let old_kid = issuer.kid();
    let old = issuer.token("user_retired_key");
    for _ in 0..2 {
        assert_eq!(
            get_with_token(&router, "/me", Some(&old)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        clerk.stats().tokens_verified,
        1,
        "the second was a cached hit"
    );

    // The instance rotates and retires the old key; a new token makes the layer refresh.
    issuer.rotate_key().unwrap();
    assert!(issuer.retire_key(&old_kid));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let new = issuer.token("user_new_key");
    assert_eq!(
        get_with_token(&router, "/me", Some(&new)).await.status,
        StatusCode::OK
    );

    // The cached session of the old key is no longer answered from the cache.
    let reply = get_with_token(&router, "/me", Some(&old)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(error_code(&reply), "unknown_key");
    // A session cached before the removal was noticed (the new token's own, cached under
    // the epoch read before its verification) is verified again once, then cached as before.
    let before = clerk.stats();
    for _ in 0..3 {
        assert_eq!(
            get_with_token(&router, "/me", Some(&new)).await.status,
            StatusCode::OK
        );
    }
    let after = clerk.stats();
    assert_eq!(after.tokens_verified, before.tokens_verified + 1);
    assert_eq!(after.token_cache_hits, before.token_cache_hits + 2);
}
