//! Clerk webhooks: Svix signature check on the raw body, then `user.*` events through the store.
//!
//! Deliveries are unordered and retried for days, so every write is versioned (Clerk's
//! `updated_at`), a deletion is a tombstone no later event undoes, and a redelivered `svix-id`
//! is a no-op. Each applied event evicts the user from every process's synced-user cache.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use aws_lc_rs::{constant_time, hmac};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::json;

use crate::config::WebhookSecret;
use crate::error::ErrorBody;
use crate::handle::ClerkSync;
use crate::stats::Counters;
use crate::sync::profile::ClerkUserObject;
use crate::sync::{UserChange, WebhookOutcome};
use crate::token::verify::unix_now;

/// Largest accepted body; Clerk's user events are a few KiB.
pub(crate) const BODY_LIMIT: usize = 256 * 1024;
/// Svix's tolerance for the timestamp, either way.
const TOLERANCE_SECS: i64 = 5 * 60;
/// Longest accepted `svix-id`; real ones are ~30 characters.
const MAX_ID_LEN: usize = 256;

/// Why a webhook delivery was rejected. Each becomes a JSON `{"error", "message"}` response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A Svix header is absent (400 `missing_webhook_headers`).
    #[error("the `{0}` header is missing; is this endpoint called by Clerk's webhooks?")]
    MissingHeader(&'static str),
    /// A Svix header cannot be parsed (400 `malformed_webhook_headers`).
    #[error("the `{0}` header is malformed")]
    MalformedHeader(&'static str),
    /// `svix-timestamp` is more than 5 minutes from now (401 `webhook_timestamp_out_of_range`).
    #[error("the delivery timestamp is more than 5 minutes from the server's clock")]
    TimestampOutOfRange,
    /// No `v1` signature matches the signing secret (401 `invalid_webhook_signature`).
    #[error("no signature matches this endpoint's signing secret")]
    InvalidSignature,
    /// The body is over 256 KiB (413 `payload_too_large`).
    #[error("the body is larger than 256 KiB")]
    PayloadTooLarge,
    /// The body is not a Clerk event of the expected shape (400 `malformed_webhook`).
    #[error("the body is not a Clerk event: {0}")]
    MalformedPayload(String),
    /// The store failed; Svix will retry (503 `sync_unavailable`).
    #[error("the user store is unavailable; the delivery will be retried")]
    StoreUnavailable,
}

impl WebhookError {
    /// The machine-readable code sent as `error`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_webhook_headers",
            Self::MalformedHeader(_) => "malformed_webhook_headers",
            Self::TimestampOutOfRange => "webhook_timestamp_out_of_range",
            Self::InvalidSignature => "invalid_webhook_signature",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MalformedPayload(_) => "malformed_webhook",
            Self::StoreUnavailable => "sync_unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingHeader(_) | Self::MalformedHeader(_) | Self::MalformedPayload(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::TimestampOutOfRange | Self::InvalidSignature => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = ErrorBody {
            error: self.code(),
            message: &message,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if self == Self::StoreUnavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        // RFC 9110 §15.5.2: a 401 names the scheme that would authenticate the request, here
        // Svix's signed headers.
        if self.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Svix realm=\"clerk-webhooks\", headers=\"svix-id svix-timestamp svix-signature\"",
                ),
            );
        }
        response
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the value Svix sends.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn sign(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(mac(secret, id, timestamp, body)))
}

fn mac(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .ok_or(WebhookError::MissingHeader(name))?
        .to_str()
        .map_err(|_| WebhookError::MalformedHeader(name))
}

/// Checks a delivery's Svix headers against the raw body and returns its `svix-id`.
pub(crate) fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<String, WebhookError> {
    let id = header(headers, "svix-id")?;
    let timestamp = header(headers, "svix-timestamp")?;
    let signatures = header(headers, "svix-signature")?;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(WebhookError::MalformedHeader("svix-id"));
    }
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::MalformedHeader("svix-timestamp"))?;
    // Checked arithmetic: a timestamp near i64::MIN or MAX is out of range, not an overflow.
    if now
        .checked_sub(timestamp)
        .and_then(i64::checked_abs)
        .is_none_or(|skew| skew > TOLERANCE_SECS)
    {
        return Err(WebhookError::TimestampOutOfRange);
    }
    // Space-separated `version,signature` pairs; only `v1` is defined, others are skipped.
    let candidates: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .collect();
    if candidates.is_empty() {
        return Err(WebhookError::MalformedHeader("svix-signature"));
    }
    let expected = mac(secret, id, timestamp, body);
    // Constant time; a candidate of another length simply does not match.
    let matched = candidates.iter().any(|candidate| {
        constant_time::verify_slices_are_equal(expected.as_ref(), candidate).is_ok()
    });
    if matched {
        Ok(id.to_owned())
    } else {
        Err(WebhookError::InvalidSignature)
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
    timestamp: Option<i64>,
}

#[derive(Deserialize)]
struct DeletedObject {
    id: Option<String>,
}

/// What a delivery amounted to, sent as `{"status": ...}` with 200.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    Processed(WebhookOutcome),
    /// Another event type, or a `user.deleted` without a user id.
    Ignored,
}

impl Delivery {
    fn status(self) -> &'static str {
        match self {
            Self::Processed(WebhookOutcome::Applied) => "applied",
            Self::Processed(WebhookOutcome::Duplicate) => "duplicate",
            Self::Processed(WebhookOutcome::UserDeleted) => "user_deleted",
            Self::Ignored => "ignored",
        }
    }

    fn counter(self, counters: &Counters) -> &AtomicU64 {
        match self {
            Self::Processed(WebhookOutcome::Applied) => &counters.webhooks_applied,
            Self::Processed(WebhookOutcome::Duplicate) => &counters.webhooks_duplicate,
            Self::Processed(WebhookOutcome::UserDeleted) | Self::Ignored => {
                &counters.webhooks_ignored
            }
        }
    }
}

struct WebhookState {
    clerk: ClerkSync,
    secret: WebhookSecret,
}

pub(crate) fn router(clerk: ClerkSync, secret: WebhookSecret, path: &str) -> Router {
    let state = Arc::new(WebhookState { clerk, secret });
    Router::new().route(path, post(handle)).with_state(state)
}

async fn handle(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let counters = state.clerk.counters();
    match process(&state, &headers, body).await {
        Ok(delivery) => {
            Counters::bump(delivery.counter(counters));
            Json(json!({ "status": delivery.status() })).into_response()
        }
        Err(error) => {
            Counters::bump(&counters.webhooks_rejected);
            if error.status().is_server_error() {
                tracing::error!(code = error.code(), "webhook delivery failed: {error}");
            } else {
                tracing::warn!(code = error.code(), "webhook delivery rejected: {error}");
            }
            error.into_response()
        }
    }
}

async fn process(
    state: &WebhookState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Delivery, WebhookError> {
    let bytes = Limited::new(body, BODY_LIMIT)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<LengthLimitError>() {
                WebhookError::PayloadTooLarge
            } else {
                WebhookError::MalformedPayload("the body could not be read".into())
            }
        })?
        .to_bytes();
    // The signature covers the exact bytes: verify before parsing anything.
    let delivery_id = verify(&state.secret, headers, &bytes, unix_now())?;
    let malformed = |error: serde_json::Error| WebhookError::MalformedPayload(error.to_string());
    let event: Event = serde_json::from_slice(&bytes).map_err(malformed)?;
    let change = match event.kind.as_str() {
        "user.created" | "user.updated" => {
            let user: ClerkUserObject = serde_json::from_value(event.data).map_err(malformed)?;
            UserChange::Upsert(user.into_profile())
        }
        "user.deleted" => {
            let deleted: DeletedObject = serde_json::from_value(event.data).map_err(malformed)?;
            let Some(user_id) = deleted.id.filter(|id| !id.is_empty()) else {
                tracing::warn!(delivery_id, "user.deleted without a user id; ignored");
                return Ok(Delivery::Ignored);
            };
            UserChange::Delete {
                user_id,
                version_ms: event.timestamp.map(seconds_or_millis_to_millis),
            }
        }
        other => {
            tracing::debug!(event = other, delivery_id, "webhook event type ignored");
            return Ok(Delivery::Ignored);
        }
    };
    let outcome = state.clerk.apply_webhook(&delivery_id, &change).await?;
    tracing::info!(
        user.id = change.user_id(),
        event = event.kind,
        delivery_id,
        status = Delivery::Processed(outcome).status(),
        "webhook delivery processed"
    );
    Ok(Delivery::Processed(outcome))
}

/// Clerk documents the event `timestamp` in seconds; accept milliseconds too.
fn seconds_or_millis_to_millis(timestamp: i64) -> i64 {
    if timestamp > 100_000_000_000 {
        timestamp
    } else {
        timestamp.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        secret: String,
        id: String,
        timestamp: i64,
        body: String,
        signature: String,
    }

    fn vectors() -> Vec<Vector> {
        let fixture = include_str!("../tests/fixtures/svix_vectors.json");
        serde_json::from_str::<Vectors>(fixture).unwrap().vectors
    }

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("svix-id", id.parse().unwrap());
        map.insert("svix-timestamp", timestamp.parse().unwrap());
        map.insert("svix-signature", signature.parse().unwrap());
        map
    }

    #[test]
    fn svix_library_vectors_are_accepted_and_reproduced() {
        let vectors = vectors();
        assert!(vectors.len() >= 16);
        // The published example from Svix's documentation is among them.
        assert!(
            vectors
                .iter()
                .any(|v| v.id == "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"
                    && v.signature == "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
        for v in &vectors {
            let secret = WebhookSecret::parse(&v.secret).unwrap();
            let map = headers(&v.id, &v.timestamp.to_string(), &v.signature);
            assert_eq!(
                verify(&secret, &map, v.body.as_bytes(), v.timestamp),
                Ok(v.id.clone()),
                "{}",
                v.id
            );
            assert_eq!(
                sign(&secret, &v.id, v.timestamp, v.body.as_bytes()),
                v.signature
            );
        }
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let v = &vectors()[0];
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        let several = format!(
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v2,whatever v1,bm9wZQ== {}",
            v.signature
        );
        let map = headers(&v.id, &v.timestamp.to_string(), &several);
        assert!(verify(&secret, &map, v.body.as_bytes(), v.timestamp).is_ok());
    }

    #[test]
    fn tampering_and_clock_skew_are_rejected() {
        let v = &vectors()[0];
        let secret = WebhookSecret::parse(&v.secret).unwrap();
        let good = headers(&v.id, &v.timestamp.to_string(), &v.signature);
        let body = v.body.as_bytes();
        let check = |map: &HeaderMap, body: &[u8], now: i64| verify(&secret, map, body, now);

        assert_eq!(
            check(&good, b"{}", v.timestamp),
            Err(WebhookError::InvalidSignature)
        );
        let other_id = headers("msg_other", &v.timestamp.to_string(), &v.signature);
        assert_eq!(
            check(&other_id, body, v.timestamp),
            Err(WebhookError::InvalidSignature)
        );
        assert_eq!(
            check(&good, body, v.timestamp + 301),
            Err(WebhookError::TimestampOutOfRange)
        );
        assert_eq!(
            check(&good, body, v.timestamp - 301),
            Err(WebhookError::TimestampOutOfRange)
        );
        assert!(check(&good, body, v.timestamp + 300).is_ok());
        // Extreme timestamps are out of range, without overflowing (a panic in debug builds).
        for extreme in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let map = headers(&v.id, &extreme.to_string(), &v.signature);
            for now in [v.timestamp, 0, i64::MAX, i64::MIN]
                .into_iter()
                .filter(|now| now.abs_diff(extreme) > 300)
            {
                assert_eq!(
                    check(&map, body, now),
                    Err(WebhookError::TimestampOutOfRange),
                    "{extreme} at {now}"
                );
            }
        }
        let wrong = WebhookSecret::parse("whsec_c2VjcmV0LXdlYmhvb2sta2V5").unwrap();
        assert_eq!(
            verify(&wrong, &good, body, v.timestamp),
            Err(WebhookError::InvalidSignature)
        );
        for bad in ["", "v1", "v1,!!!", "v2,abcd"] {
            let map = headers(&v.id, &v.timestamp.to_string(), bad);
            assert_eq!(
                check(&map, body, v.timestamp),
                Err(WebhookError::MalformedHeader("svix-signature")),
                "{bad:?}"
            );
        }
        let map = headers(&v.id, "yesterday", &v.signature);
        assert_eq!(
            check(&map, body, v.timestamp),
            Err(WebhookError::MalformedHeader("svix-timestamp"))
        );
        let mut missing = good.clone();
        missing.remove("svix-signature");
        assert_eq!(
            check(&missing, body, v.timestamp),
            Err(WebhookError::MissingHeader("svix-signature"))
        );
    }

    #[test]
    fn event_timestamps_are_read_as_seconds_or_milliseconds() {
        assert_eq!(
            seconds_or_millis_to_millis(1_716_883_200),
            1_716_883_200_000
        );
        assert_eq!(
            seconds_or_millis_to_millis(1_716_883_200_000),
            1_716_883_200_000
        );
    }
}
