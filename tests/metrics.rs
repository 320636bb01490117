//! Metrics and health: a scripted sequence (hits, misses, each rejection kind, a database cut,
//! webhooks, rate-limit decisions, invalidations) against the real PostgreSQL, then the exact
//! counts of the rendered `/metrics`. A test binary of its own: the recorder is global, so
//! this file holds one test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clerk_sync::testing::{DevIssuer, FakeClerkApi, signed_webhook_request};
use clerk_sync::{ClerkUser, Limit, PgUserStore, RateLimitLayer, TierLimits};
use common::{WEBHOOK_PATH, WEBHOOK_SECRET, app, clerk, get_with_token, proxied_pool, send};
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tower::ServiceBuilder;

/// `name{labels} value` lines of the text format, histograms left out.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter(|line| !line.starts_with("clerk_sync_sync_duration_seconds"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn user_updated(id: &str, updated_at: i64) -> String {
    json!({"data": {"object": "user", "id": id, "first_name": "New", "last_name": null,
        "username": null, "image_url": null, "primary_email_address_id": null,
        "email_addresses": [], "created_at": 1, "updated_at": updated_at},
        "object": "event", "type": "user.updated", "timestamp": 1716883300, "instance_id": "ins_1"})
    .to_string()
}

#[sqlx::test(migrations = false)]
async fn the_rendered_metrics_count_exactly_what_happened(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let (proxy, pool, direct) = proxied_pool(&options, Duration::from_millis(500)).await;
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = clerk(&issuer, PgUserStore::new(pool.clone()), |b| {
        b.sync_timeout(Duration::from_secs(1))
    });
    let limited = Router::new()
        .route("/limited", get(|_: ClerkUser| async { "ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(clerk.layer())
                .layer(RateLimitLayer::per_tier(TierLimits::new(
                    Limit::per_minute(2).unwrap(),
                ))),
        );
    let router = app(&clerk, direct.clone()).merge(limited);

    // A miss that syncs, three hits; a new token of the same user (verified now, user
    // cached); two anonymous requests.
    let token = issuer.token("user_a");
    assert_eq!(
        get_with_token(&router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    for _ in 0..3 {
        assert_eq!(
            get_with_token(&router, "/me", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    let second = issuer
        .token_for("user_a")
        .claim("sid", "sess_second")
        .build();
    assert_eq!(
        get_with_token(&router, "/me", Some(&second)).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        assert_eq!(
            get_with_token(&router, "/anon", None).await.status,
            StatusCode::OK
        );
    }
    // Each rejection kind: no token, a malformed one, an expired one, a bad signature.
    let expired = issuer.token_for("user_a").expired_for(600).build();
    let forged = issuer.token_for("user_a").wrong_signature().build();
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("not-a-jwt"), StatusCode::UNAUTHORIZED),
        (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
        (Some(forged.as_str()), StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(get_with_token(&router, "/me", token).await.status, status);
    }
    // The database cut: a new user cannot be synced (503), twice.
    proxy.cut();
    let newcomer = issuer.token("user_b");
    for _ in 0..2 {
        let reply = get_with_token(&router, "/me", Some(&newcomer)).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
    }
    // Health says so.
    let health = clerk.health().await;
    assert!(!health.healthy && !health.store.reachable, "{health:?}");
    assert!(health.store.error.is_some());
    proxy.restore();
    let health = clerk.health().await;
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.keys.source, "jwks");
    assert_eq!(health.keys.last_fetch, Some("ok"));
    assert_eq!(
        health.listener,
        Some(clerk_sync::health::ListenerState::NotRunning)
    );

    // Webhooks: applied, a redelivery, a bad signature.
    let body = user_updated("user_a", 1_900_000_000_000);
    for _ in 0..2 {
        let request = signed_webhook_request(WEBHOOK_PATH, WEBHOOK_SECRET, "msg_1", &body).unwrap();
        assert_eq!(send(&router, request).await.status, StatusCode::OK);
    }
    let bad = signed_webhook_request(
        WEBHOOK_PATH,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_2",
        &body,
    )
    .unwrap();
    assert_eq!(send(&router, bad).await.status, StatusCode::UNAUTHORIZED);
    // Rate limits: 2 per minute, then a refusal (the webhook evicted user_a: this syncs).
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                get_with_token(&router, "/limited", Some(&token))
                    .await
                    .status
                    .as_u16(),
            );
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 429]);
    clerk.invalidate("user_a").await.unwrap();
    // Backend API calls are labelled by their path template, never an id.
    let fake = FakeClerkApi::start(1).await.unwrap();
    fake.client()
        .get_user(&FakeClerkApi::user_id(0))
        .await
        .unwrap();
    assert!(fake.client().get_user("user_unknown").await.is_err());

    clerk.record_metrics();
    let rendered = handle.render();
    let mut got = samples(&rendered);
    // The cache's own count trails its latest removal (moka applies them in maintenance):
    // user_a was just evicted, so 0 or 1.
    let cached_users = got.remove("clerk_sync_cached_users").unwrap();
    assert!(cached_users <= 1.0, "{cached_users}");
    let expected: BTreeMap<String, f64> = [
        // hits: 3 on /me, then 2 on /limited (its first request followed the webhook's
        // eviction: the stale session is synced again, which counts as `synced`); synced:
        // the first request, the second token, that re-sync.
        (r#"clerk_sync_requests_total{outcome="hit"}"#, 5.0),
        (r#"clerk_sync_requests_total{outcome="synced"}"#, 3.0),
        (r#"clerk_sync_requests_total{outcome="anonymous"}"#, 2.0),
        (r#"clerk_sync_requests_total{outcome="rejected"}"#, 6.0),
        (r#"clerk_sync_rejections_total{code="missing_token"}"#, 1.0),
        (
            r#"clerk_sync_rejections_total{code="malformed_token"}"#,
            1.0,
        ),
        (r#"clerk_sync_rejections_total{code="token_expired"}"#, 1.0),
        (
            r#"clerk_sync_rejections_total{code="invalid_signature"}"#,
            1.0,
        ),
        (
            r#"clerk_sync_rejections_total{code="sync_unavailable"}"#,
            2.0,
        ),
        (r#"clerk_sync_upserts_total{result="ok"}"#, 2.0),
        (r#"clerk_sync_upserts_total{result="error"}"#, 2.0),
        (r#"clerk_sync_jwks_fetches_total{result="ok"}"#, 1.0),
        (
            r#"clerk_sync_webhooks_total{type="user.updated",outcome="applied"}"#,
            1.0,
        ),
        (
            r#"clerk_sync_webhooks_total{type="user.updated",outcome="duplicate"}"#,
            1.0,
        ),
        (
            r#"clerk_sync_webhooks_total{type="unknown",outcome="invalid_webhook_signature"}"#,
            1.0,
        ),
        (
            r#"clerk_sync_rate_limit_decisions_total{decision="allowed"}"#,
            2.0,
        ),
        (
            r#"clerk_sync_rate_limit_decisions_total{decision="denied"}"#,
            1.0,
        ),
        (r#"clerk_sync_invalidations_total{source="webhook"}"#, 2.0),
        (
            r#"clerk_sync_invalidations_total{source="invalidate"}"#,
            1.0,
        ),
        (
            r#"clerk_sync_backend_api_requests_total{endpoint="/v1/users/{id}",status="200"}"#,
            1.0,
        ),
        (
            r#"clerk_sync_backend_api_requests_total{endpoint="/v1/users/{id}",status="404"}"#,
            1.0,
        ),
        ("clerk_sync_cached_sessions", 2.0),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    assert_eq!(got, expected, "\n{rendered}");
    assert!(
        rendered.contains("clerk_sync_sync_duration_seconds"),
        "the miss path's histogram\n{rendered}"
    );
}
