//! The webhook endpoint: body limit, signature, event parsing, then the change through the
//! syncer.
//!
//! Deliveries are unordered and retried for days, so every write is versioned (Clerk's
//! `updated_at`), a deletion is a tombstone no later event undoes, and a redelivered `svix-id`
//! is a no-op. Each applied event evicts the user from every process's synced-user cache.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::json;

use super::WebhookError;
use super::svix::verify;
use crate::core::Core;
use crate::secret::WebhookSecret;
use crate::stats::Counters;
use crate::store::organization::{ClerkMembershipObject, ClerkOrganizationObject};
use crate::store::profile::ClerkUserObject;
use crate::store::{OrganizationChange, UserChange, WebhookOutcome};
use crate::time::unix_now;

/// Largest accepted body; Clerk's user events are a few KiB.
const BODY_LIMIT: usize = 256 * 1024;

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
            Self::Processed(WebhookOutcome::OrganizationDeleted) => "organization_deleted",
            Self::Ignored => "ignored",
        }
    }

    fn counter(self, counters: &Counters) -> &AtomicU64 {
        match self {
            Self::Processed(WebhookOutcome::Applied) => &counters.webhooks_applied,
            Self::Processed(WebhookOutcome::Duplicate) => &counters.webhooks_duplicate,
            Self::Processed(_) | Self::Ignored => &counters.webhooks_ignored,
        }
    }
}

struct WebhookState {
    core: Arc<Core>,
    secret: WebhookSecret,
}

/// `POST path` → the webhook handler, for a router of any state `S`.
pub(crate) fn router<S>(core: Arc<Core>, secret: WebhookSecret, path: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let state = Arc::new(WebhookState { core, secret });
    Router::new().route(path, post(handle)).with_state(state)
}

async fn handle(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let counters = &state.core.counters;
    // Clerk's event type once the signature is verified and the body parsed.
    let mut kind = None;
    let result = process(&state, &headers, body, &mut kind).await;
    let outcome = match &result {
        Ok(delivery) => delivery.status(),
        Err(error) => error.code(),
    };
    ::metrics::counter!(
        crate::metrics::WEBHOOKS,
        "type" => kind.unwrap_or_else(|| "unknown".to_owned()),
        "outcome" => outcome
    )
    .increment(1);
    match result {
        Ok(delivery) => {
            Counters::bump(delivery.counter(counters));
            Json(json!({ "status": delivery.status() })).into_response()
        }
        Err(error) => {
            Counters::bump(&counters.webhooks_rejected);
            if error.status().is_server_error() {
                tracing::error!(code = error.code(), %error, "webhook delivery failed");
            } else {
                tracing::warn!(code = error.code(), %error, "webhook delivery rejected");
            }
            error.into_response()
        }
    }
}

#[tracing::instrument(name = "clerk_sync.webhook", skip_all, fields(delivery.id))]
async fn process(
    state: &WebhookState,
    headers: &HeaderMap,
    body: Body,
    kind: &mut Option<String>,
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
    tracing::Span::current().record("delivery.id", delivery_id.as_str());
    let malformed = |error: serde_json::Error| WebhookError::MalformedPayload(error.to_string());
    let event: Event = serde_json::from_slice(&bytes).map_err(malformed)?;
    *kind = Some(event.kind.clone());
    let version_ms = event.timestamp.map(seconds_or_millis_to_millis);
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
                version_ms,
            }
        }
        kind if kind.starts_with("organization") => {
            let Some(change) = organization_change(kind, event.data, version_ms)? else {
                tracing::debug!(event = kind, delivery_id, "webhook event type ignored");
                return Ok(Delivery::Ignored);
            };
            let outcome = state
                .core
                .syncer
                .apply_organization_webhook(&delivery_id, &change)
                .await
                .map_err(|_| WebhookError::StoreUnavailable)?;
            let Some(outcome) = outcome else {
                tracing::debug!(
                    event = kind,
                    delivery_id,
                    "the user store keeps no organizations; ignored"
                );
                return Ok(Delivery::Ignored);
            };
            tracing::info!(
                organization.id = change.organization_id(),
                user.id = change.user_id(),
                event = kind,
                delivery_id,
                status = Delivery::Processed(outcome).status(),
                "webhook delivery processed"
            );
            return Ok(Delivery::Processed(outcome));
        }
        other => {
            tracing::debug!(event = other, delivery_id, "webhook event type ignored");
            return Ok(Delivery::Ignored);
        }
    };
    let outcome = state
        .core
        .syncer
        .apply_webhook(&delivery_id, &change)
        .await
        .map_err(|_| WebhookError::StoreUnavailable)?;
    tracing::info!(
        user.id = change.user_id(),
        event = event.kind,
        delivery_id,
        status = Delivery::Processed(outcome).status(),
        "webhook delivery processed"
    );
    Ok(Delivery::Processed(outcome))
}

/// The change an `organization.*` or `organizationMembership.*` event stands for; `None` for
/// the other organization events (domains, invitations, roles) and a deletion without an id.
fn organization_change(
    kind: &str,
    data: serde_json::Value,
    version_ms: Option<i64>,
) -> Result<Option<OrganizationChange>, WebhookError> {
    let malformed = |error: serde_json::Error| WebhookError::MalformedPayload(error.to_string());
    let membership = |data: serde_json::Value, version: Option<i64>| {
        let object: ClerkMembershipObject = serde_json::from_value(data).map_err(malformed)?;
        object.into_snapshots(version).ok_or_else(|| {
            WebhookError::MalformedPayload("a membership without public_user_data.user_id".into())
        })
    };
    Ok(Some(match kind {
        "organization.created" | "organization.updated" => {
            let org: ClerkOrganizationObject = serde_json::from_value(data).map_err(malformed)?;
            OrganizationChange::Upsert(org.into_profile())
        }
        "organization.deleted" => {
            let deleted: DeletedObject = serde_json::from_value(data).map_err(malformed)?;
            let Some(organization_id) = deleted.id.filter(|id| !id.is_empty()) else {
                return Ok(None);
            };
            OrganizationChange::Delete {
                organization_id,
                version_ms,
            }
        }
        "organizationMembership.created" | "organizationMembership.updated" => {
            let (org, member) = membership(data, None)?;
            OrganizationChange::UpsertMembership(org, member)
        }
        // The deletion is as new as the event (the object's `updated_at` is its last change
        // before it).
        "organizationMembership.deleted" => {
            let (org, member) = membership(data, version_ms)?;
            OrganizationChange::DeleteMembership(org, member)
        }
        _ => return Ok(None),
    }))
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
