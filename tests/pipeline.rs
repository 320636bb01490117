//! The pipeline's seams, on the memory store (no database): custom rejections, the
//! invalidation channel (publish after writes, messages, reconnects) and the explicit
//! background task.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::response::IntoResponse;
use clerk_sync::store::{ChannelEvent, StoreFuture, UpsertOutcome, UserProfile, UserStore};
use clerk_sync::testing::{DevIssuer, signed_webhook_request};
use clerk_sync::{AuthError, MemoryUserStore};
use common::{
    Capture, CountingStore, ScriptedChannel, WEBHOOK_PATH, WEBHOOK_SECRET, app, clerk,
    get_with_token, send, wait_for,
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

fn deleted_event(id: &str) -> String {
    json!({"data": {"deleted": true, "id": id, "object": "user"}, "object": "event",
        "type": "user.deleted", "timestamp": 1716883300, "instance_id": "ins_1"})
    .to_string()
}

/// A store whose every upsert fails, for the 503 path.
#[derive(Clone)]
struct Down;

impl UserStore for Down {
    fn upsert<'a>(&'a self, _profile: &'a UserProfile) -> StoreFuture<'a, UpsertOutcome> {
        Box::pin(async { Err(clerk_sync::store::StoreError::Other("down".into())) })
    }

    fn invalidation_channel(
        &self,
    ) -> Option<std::sync::Arc<dyn clerk_sync::store::InvalidationChannel>> {
        None
    }
}

#[tokio::test]
async fn on_rejection_shapes_every_rejection_and_the_crate_keeps_the_challenge() {
    let issuer = DevIssuer::start().await.unwrap();
    let db = MemoryUserStore::new();
    let shaped = clerk(&issuer, CountingStore::on(db.clone()), |b| {
        b.on_rejection(|error: &AuthError| {
            let body = format!("<p>{}: sign in again</p>", error.code());
            let mut response = (error.status(), body).into_response();
            if error.code() == "token_expired" {
                // A hook may set its own challenge; the crate leaves it alone.
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"app\""),
                );
            }
            response
        })
    });
    let router = app(&shaped, db.clone());

    let reply = get_with_token(&router, "/me", Some("not-a-jwt")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert!(
        reply.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\""),
        "the crate adds the RFC 6750 challenge the hook left out"
    );
    let reply = get_with_token(&router, "/me", None).await;
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");

    let expired = issuer.token_for("user_a").expired_for(60).build();
    let reply = get_with_token(&router, "/me", Some(&expired)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"app\"",
        "the hook's own challenge is kept"
    );
    assert!(db.is_empty(), "nothing was written");

    // The slow path's rejections go through the hook too, with Retry-After added.
    let down = clerk(&issuer, Down, |b| {
        b.on_rejection(|error: &AuthError| (error.status(), error.code()).into_response())
    });
    let router = app(&down, db.clone());
    let reply = get_with_token(&router, "/me", Some(&issuer.token("user_b"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    assert!(db.is_empty());

    // Without a hook: the JSON default.
    let plain = clerk(&issuer, db.clone(), |b| b);
    let reply = get_with_token(&app(&plain, db.clone()), "/me", Some("x")).await;
    assert_eq!(reply.body["error"], "malformed_token");
}

#[tokio::test]
async fn webhook_writes_and_invalidate_publish_bare_ids_after_the_write() {
    let issuer = DevIssuer::start().await.unwrap();
    let db = MemoryUserStore::new();
    let channel = ScriptedChannel::default();
    let clerk = clerk(&issuer, db.clone(), |b| b.invalidation(channel.clone()));
    tokio::spawn(clerk.background());
    let router = app(&clerk, db.clone());

    let body = deleted_event("user_gone");
    let request = signed_webhook_request(WEBHOOK_PATH, WEBHOOK_SECRET, "msg_1", &body).unwrap();
    assert_eq!(send(&router, request).await.status, StatusCode::OK);
    assert!(db.user("user_gone").unwrap().deleted, "written first");
    assert_eq!(channel.published(), ["user_gone"]);
    // A redelivery is a no-op write but publishes again: the first attempt may have committed
    // without getting this far.
    let request = signed_webhook_request(WEBHOOK_PATH, WEBHOOK_SECRET, "msg_1", &body).unwrap();
    let reply = send(&router, request).await;
    assert_eq!(reply.body["status"], "duplicate");
    assert_eq!(channel.published(), ["user_gone", "user_gone"]);

    clerk.invalidate("user_other").await.unwrap();
    assert_eq!(
        channel.published(),
        ["user_gone", "user_gone", "user_other"]
    );
}

#[tokio::test]
async fn channel_messages_evict_users_and_a_reconnect_clears_the_cache() {
    let issuer = DevIssuer::start().await.unwrap();
    let db = MemoryUserStore::new();
    let store = CountingStore::on(db.clone());
    let channel = ScriptedChannel::default();
    let clerk = clerk(&issuer, store.clone(), |b| b.invalidation(channel.clone()));
    tokio::spawn(clerk.background());
    channel.send(ChannelEvent::Listening);
    wait_for(&clerk, "the listener", |s| s.listener_connects == 1).await;
    let router = app(&clerk, db.clone());
    let (ada, bo) = (issuer.token("user_ada"), issuer.token("user_bo"));
    for token in [&ada, &bo, &ada, &bo] {
        assert_eq!(
            get_with_token(&router, "/me", Some(token)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(store.calls(), 2, "one upsert per user, then hits");

    // Another process changed Ada's tier.
    assert!(db.set_tier("user_ada", "pro"));
    channel.send(ChannelEvent::Message("user_ada".into()));
    wait_for(&clerk, "the eviction", |s| s.invalidations_received == 1).await;
    let reply = get_with_token(&router, "/me", Some(&ada)).await;
    assert_eq!(reply.body["tier"], "pro");
    assert_eq!(store.calls(), 3);

    // An organization id evicts that organization (no user); anything else, nothing.
    channel.send(ChannelEvent::Message("org_acme".into()));
    channel.send(ChannelEvent::Message("garbage".into()));
    // A lost subscription keeps serving the cache; being back clears it.
    channel.send(ChannelEvent::Lost(clerk_sync::store::StoreError::Other(
        "cut".into(),
    )));
    get_with_token(&router, "/me", Some(&bo)).await;
    assert_eq!(store.calls(), 3, "still cached while the channel is down");
    channel.send(ChannelEvent::Listening);
    wait_for(&clerk, "the reconnect", |s| s.listener_connects == 2).await;
    assert_eq!(
        clerk.stats().invalidations_received,
        2,
        "org_acme counted as an organization eviction, garbage not at all"
    );
    for token in [&ada, &bo] {
        get_with_token(&router, "/me", Some(token)).await;
    }
    assert_eq!(
        store.calls(),
        5,
        "both users synced again after the reconnect"
    );
}

#[tokio::test]
async fn a_channel_nobody_listens_on_is_warned_about_once() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let issuer = DevIssuer::start().await.unwrap();
    let db = MemoryUserStore::new();
    let unheard = clerk(&issuer, db.clone(), |b| {
        b.invalidation(ScriptedChannel::default())
    });
    let router = app(&unheard, db.clone());
    for user in ["user_1", "user_2", "user_3"] {
        get_with_token(&router, "/me", Some(&issuer.token(user))).await;
    }
    let warning = "nobody listens on it";
    assert_eq!(
        capture.text().matches(warning).count(),
        1,
        "{}",
        capture.text()
    );

    // With the background task spawned, or without a channel, there is nothing to warn about.
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let heard = clerk(&issuer, db.clone(), |b| {
        b.invalidation(ScriptedChannel::default())
    });
    tokio::spawn(heard.background());
    let alone = clerk(&issuer, db.clone(), |b| b);
    for clerk in [&heard, &alone] {
        let router = app(clerk, db.clone());
        get_with_token(&router, "/me", Some(&issuer.token("user_4"))).await;
    }
    assert!(!capture.text().contains(warning), "{}", capture.text());
}

#[tokio::test]
async fn the_background_task_ends_with_the_last_holder_of_the_pipeline() {
    let issuer = DevIssuer::start().await.unwrap();
    let db = MemoryUserStore::new();
    let channel = ScriptedChannel::default();
    let clerk = clerk(&issuer, db.clone(), |b| b.invalidation(channel.clone()));
    let task = tokio::spawn(clerk.background());
    let router = app(&clerk, db.clone());
    drop(clerk);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!task.is_finished(), "the router still holds the pipeline");
    drop(router);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends once the router is gone too")
        .unwrap();
}
