//! Clerk webhooks against real PostgreSQL: signed deliveries are applied once, in order of
//! Clerk's `updated_at`; every bad delivery is rejected with its status and code, writing nothing.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use clerk_sync::testing::{DevIssuer, sign_webhook, signed_webhook_request};
use clerk_sync::{ClerkSync, PgUserStore};
use common::{Harness, WEBHOOK_PATH as PATH, WEBHOOK_SECRET as SECRET};
use common::{Reply, error_code, get_with_token, send, user_rows};
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sqlx::PgPool;

/// A `user.created`/`user.updated` event shaped like Clerk's (webhooks OpenAPI spec).
fn user_event(kind: &str, id: &str, email: &str, first_name: &str, updated_at: i64) -> String {
    json!({
        "data": {
            "object": "user", "id": id, "external_id": null,
            "primary_email_address_id": "idn_primary", "primary_phone_number_id": null,
            "username": null, "first_name": first_name, "last_name": "Doe",
            "image_url": "https://img.clerk.com/xxxxxx", "has_image": true,
            "public_metadata": {}, "private_metadata": null, "unsafe_metadata": {},
            "email_addresses": [
                {"id": "idn_other", "object": "email_address", "email_address": "other@example.com"},
                {"id": "idn_primary", "object": "email_address", "email_address": email}
            ],
            "phone_numbers": [], "web3_wallets": [], "passkeys": [], "external_accounts": [],
            "password_enabled": true, "two_factor_enabled": false, "banned": false, "locked": false,
            "last_sign_in_at": updated_at, "updated_at": updated_at, "created_at": 1716883200000_i64
        },
        "event_attributes": {"http_request": {"client_ip": "192.168.1.100", "user_agent": "Mozilla/5.0"}},
        "instance_id": "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
        "object": "event",
        "timestamp": updated_at / 1000,
        "type": kind
    })
    .to_string()
}

fn deleted_event(id: &str) -> String {
    json!({
        "data": {"deleted": true, "id": id, "object": "user"},
        "instance_id": "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
        "object": "event", "timestamp": 1716883300, "type": "user.deleted"
    })
    .to_string()
}

async fn deliver(router: &Router, id: &str, body: &str) -> Reply {
    send(
        router,
        signed_webhook_request(PATH, SECRET, id, body).unwrap(),
    )
    .await
}

async fn user_row(pool: &PgPool, id: &str) -> Option<Value> {
    sqlx::query_scalar::<_, Value>("SELECT row_to_json(u)::jsonb FROM users u WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn recorded_deliveries(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM clerk_webhook_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn user_created_is_applied_with_the_primary_email(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let body = user_event(
        "user.created",
        "user_hook",
        "john@example.com",
        "John",
        1716883200000,
    );
    let reply = deliver(&f.router, "msg_1", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "applied");

    let row = user_row(&pool, "user_hook").await.unwrap();
    assert_eq!(row["email"], "john@example.com");
    assert_eq!(row["first_name"], "John");
    assert_eq!(row["tier"], "free");
    assert_eq!(row["last_seen_at"], Value::Null, "a webhook is not a visit");
    assert_eq!(recorded_deliveries(&pool).await, 1);
    assert_eq!(f.clerk.stats().webhooks_applied, 1);
}

#[sqlx::test(migrations = false)]
async fn redelivery_is_a_no_op(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let first = user_event(
        "user.updated",
        "user_re",
        "a@example.com",
        "First",
        1716883200000,
    );
    assert_eq!(
        deliver(&f.router, "msg_same", &first).await.body["status"],
        "applied"
    );
    // Svix retries with the same id; even a different body must not be applied twice.
    let second = user_event(
        "user.updated",
        "user_re",
        "b@example.com",
        "Second",
        1716883300000,
    );
    let reply = deliver(&f.router, "msg_same", &second).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "duplicate");
    assert_eq!(
        user_row(&pool, "user_re").await.unwrap()["email"],
        "a@example.com"
    );
    assert_eq!(recorded_deliveries(&pool).await, 1);
}

#[sqlx::test(migrations = false)]
async fn older_update_leaves_the_row_unchanged(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let newer = user_event(
        "user.updated",
        "user_order",
        "new@example.com",
        "New",
        1716883300000,
    );
    let older = user_event(
        "user.updated",
        "user_order",
        "old@example.com",
        "Old",
        1716883200000,
    );
    deliver(&f.router, "msg_newer", &newer).await;
    let before = user_row(&pool, "user_order").await.unwrap();
    let reply = deliver(&f.router, "msg_older", &older).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(user_row(&pool, "user_order").await.unwrap(), before);
}

#[sqlx::test(migrations = false)]
async fn a_duplicate_delivery_still_evicts_the_user_here(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let token = f.issuer.token("user_lost_eviction");
    assert_eq!(
        get_with_token(&f.router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );
    // The first attempt of `msg_lost` committed, but its caller timed out before the eviction
    // (played here by writing what that commit wrote, without this process hearing of it).
    for sql in [
        "INSERT INTO clerk_webhook_events (svix_id) VALUES ('msg_lost')",
        "UPDATE users SET deleted_at = now(), email = NULL WHERE id = 'user_lost_eviction'",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let reply = deliver(&f.router, "msg_lost", &deleted_event("user_lost_eviction")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "duplicate");
    // Svix's retry evicted the user, so the deletion is seen at once.
    let reply = get_with_token(&f.router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(error_code(&reply), "user_deleted");
}

#[sqlx::test(migrations = false)]
async fn deleted_user_with_a_valid_token_gets_403(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let token = f.issuer.token("user_leaving");
    assert_eq!(
        get_with_token(&f.router, "/me", Some(&token)).await.status,
        StatusCode::OK
    );

    let reply = deliver(&f.router, "msg_delete", &deleted_event("user_leaving")).await;
    assert_eq!(reply.body["status"], "applied");
    // Same still-valid token, cached user evicted by the webhook.
    let reply = get_with_token(&f.router, "/me", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&reply), "user_deleted");

    let row = user_row(&pool, "user_leaving").await.unwrap();
    assert_ne!(row["deleted_at"], Value::Null);
    // A late, stale `user.updated` does not resurrect the user either.
    let late = user_event(
        "user.updated",
        "user_leaving",
        "x@example.com",
        "X",
        1816883200000,
    );
    assert_eq!(
        deliver(&f.router, "msg_late", &late).await.body["status"],
        "user_deleted"
    );
    let after = user_row(&pool, "user_leaving").await.unwrap();
    assert_eq!(after["email"], Value::Null);
    assert_eq!(after["deleted_at"], row["deleted_at"]);
}

#[sqlx::test(migrations = false)]
async fn delete_before_create_leaves_a_tombstone(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    deliver(&f.router, "msg_del", &deleted_event("user_ghost")).await;
    let created = user_event(
        "user.created",
        "user_ghost",
        "g@example.com",
        "G",
        1716883200000,
    );
    assert_eq!(
        deliver(&f.router, "msg_create", &created).await.body["status"],
        "user_deleted"
    );
    let row = user_row(&pool, "user_ghost").await.unwrap();
    assert_ne!(row["deleted_at"], Value::Null);
    assert_eq!(row["email"], Value::Null);
}

#[sqlx::test(migrations = false)]
async fn unknown_event_types_are_acknowledged_and_ignored(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let body = json!({"data": {"id": "sess_1", "object": "session"}, "object": "event",
        "type": "session.created", "timestamp": 1716883200, "instance_id": "ins_1"})
    .to_string();
    let reply = deliver(&f.router, "msg_session", &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ignored");
    assert_eq!(user_rows(&pool).await, 0);
    assert_eq!(recorded_deliveries(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn several_signatures_where_only_the_last_is_valid_are_accepted(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let body = user_event(
        "user.created",
        "user_multi",
        "m@example.com",
        "M",
        1716883200000,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let valid = sign_webhook(SECRET, "msg_multi", now, body.as_bytes()).unwrap();
    let stale_secret = sign_webhook(
        "whsec_c2VjcmV0LXdlYmhvb2sta2V5",
        "msg_multi",
        now,
        body.as_bytes(),
    )
    .unwrap();
    let request = Request::post(PATH)
        .header("svix-id", "msg_multi")
        .header("svix-timestamp", now.to_string())
        .header(
            "svix-signature",
            format!("{stale_secret} v1,bm90IGl0 {valid}"),
        )
        .body(Body::from(body))
        .unwrap();
    let reply = send(&f.router, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(user_rows(&pool).await, 1);
}

#[sqlx::test(migrations = false)]
async fn bad_deliveries_are_rejected_and_write_nothing(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    let body = user_event(
        "user.created",
        "user_evil",
        "e@example.com",
        "E",
        1716883200000,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let request = |id: &str, timestamp: i64, signature: Option<String>, body: &str| {
        let mut builder = Request::post(PATH)
            .header("svix-id", id)
            .header("svix-timestamp", timestamp.to_string());
        if let Some(signature) = signature {
            builder = builder.header("svix-signature", signature);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    };
    let sign = |secret: &str, timestamp: i64, body: &str| {
        Some(sign_webhook(secret, "msg_bad", timestamp, body.as_bytes()).unwrap())
    };
    let oversized = format!("{{\"pad\":\"{}\"}}", "x".repeat(256 * 1024));

    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "missing signature header",
            request("msg_bad", now, None, &body),
            StatusCode::BAD_REQUEST,
            "missing_webhook_headers",
        ),
        (
            "wrong secret",
            request(
                "msg_bad",
                now,
                sign("whsec_c2VjcmV0LXdlYmhvb2sta2V5", now, &body),
                &body,
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_webhook_signature",
        ),
        (
            "tampered body",
            request(
                "msg_bad",
                now,
                sign(SECRET, now, &body),
                &body.replace("e@example", "f@example"),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_webhook_signature",
        ),
        (
            "6 minutes old",
            request("msg_bad", now - 360, sign(SECRET, now - 360, &body), &body),
            StatusCode::UNAUTHORIZED,
            "webhook_timestamp_out_of_range",
        ),
        (
            "6 minutes ahead",
            request("msg_bad", now + 360, sign(SECRET, now + 360, &body), &body),
            StatusCode::UNAUTHORIZED,
            "webhook_timestamp_out_of_range",
        ),
        (
            "timestamp i64::MIN (overflows a naive skew check)",
            request("msg_bad", i64::MIN, sign(SECRET, i64::MIN, &body), &body),
            StatusCode::UNAUTHORIZED,
            "webhook_timestamp_out_of_range",
        ),
        (
            "malformed signature header",
            request("msg_bad", now, Some("sha256=abcdef".into()), &body),
            StatusCode::BAD_REQUEST,
            "malformed_webhook_headers",
        ),
        (
            "oversized body",
            request("msg_bad", now, sign(SECRET, now, &oversized), &oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "signed but not JSON",
            request("msg_bad", now, sign(SECRET, now, "not json"), "not json"),
            StatusCode::BAD_REQUEST,
            "malformed_webhook",
        ),
        (
            "signed user event without an id",
            request(
                "msg_bad",
                now,
                sign(
                    SECRET,
                    now,
                    r#"{"type":"user.created","data":{"object":"user"}}"#,
                ),
                r#"{"type":"user.created","data":{"object":"user"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            "malformed_webhook",
        ),
    ];
    let count = cases.len() as u64;
    for (case, request, status, code) in cases {
        let reply = send(&f.router, request).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
        assert_eq!(error_code(&reply), code, "{case}");
        if status == StatusCode::UNAUTHORIZED {
            let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Svix "), "{case}: {challenge}");
        }
        assert_eq!(user_rows(&pool).await, 0, "{case}: no row written");
        assert_eq!(
            recorded_deliveries(&pool).await,
            0,
            "{case}: no delivery recorded"
        );
    }
    assert_eq!(f.clerk.stats().webhooks_rejected, count);
}

#[test]
fn non_base64_secret_is_a_config_error_naming_the_variable() {
    let error = clerk_sync::ClerkConfig::builder()
        .issuer("https://clerk.example.com")
        .jwks_url("https://clerk.example.com/.well-known/jwks.json")
        .webhook_signing_secret("whsec_not*base64")
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "CLERK_WEBHOOK_SIGNING_SECRET");
}

#[sqlx::test(migrations = false)]
async fn webhook_router_without_a_secret_names_the_variable(pool: PgPool) {
    clerk_sync::migrate(&pool).await.unwrap();
    let issuer = DevIssuer::start().await.unwrap();
    let clerk = ClerkSync::builder(issuer.config().build().unwrap(), PgUserStore::new(pool))
        .build()
        .unwrap();
    let error = clerk.webhook_router::<()>(PATH).unwrap_err();
    assert_eq!(error.setting(), "CLERK_WEBHOOK_SIGNING_SECRET");
}

#[sqlx::test(migrations = false)]
async fn database_failure_answers_503_so_svix_retries(pool: PgPool) {
    let f = Harness::start(&pool, |b| b).await;
    sqlx::query("DROP TABLE clerk_webhook_events")
        .execute(&pool)
        .await
        .unwrap();
    let body = user_event(
        "user.created",
        "user_retry",
        "r@example.com",
        "R",
        1716883200000,
    );
    let reply = deliver(&f.router, "msg_retry", &body).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&reply), "sync_unavailable");
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(user_rows(&pool).await, 0, "the transaction rolled back");
}
