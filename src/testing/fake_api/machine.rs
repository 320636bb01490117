//! The verify routes of [`super::FakeClerkApi`]: `POST /api_keys/verify`,
//! `/m2m_tokens/verify` and `/oauth_applications/access_tokens/verify`, with and without `/v1`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{FakeClerkApi, FakeState, clerk_errors, gate};
use crate::testing::random_hex_id;
use crate::token_type::TokenType;

/// The three endpoints: path (without `/v1`), body field, type.
const ENDPOINTS: [(&str, &str, TokenType); 3] = [
    ("/api_keys/verify", "secret", TokenType::ApiKey),
    ("/m2m_tokens/verify", "token", TokenType::M2mToken),
    (
        "/oauth_applications/access_tokens/verify",
        "access_token",
        TokenType::OAuthToken,
    ),
];

/// The slot of `token_type` in the per-endpoint counters.
pub(super) fn slot(token_type: TokenType) -> usize {
    match token_type {
        TokenType::ApiKey => 0,
        TokenType::M2mToken => 1,
        _ => 2,
    }
}

/// Both spellings of each endpoint (the JS SDK's, without `/v1`, and the spec's, with it).
pub(super) fn routes(router: Router<Arc<FakeState>>) -> Router<Arc<FakeState>> {
    ENDPOINTS
        .iter()
        .fold(router, |router, &(path, field, token_type)| {
            let handler = move |state: State<Arc<FakeState>>,
                                uri: Uri,
                                headers: HeaderMap,
                                body: axum::body::Bytes| {
                verify(state, uri, headers, body, field, token_type)
            };
            router
                .route(path, post(handler))
                .route(&format!("/v1{path}"), post(handler))
        })
}

async fn verify(
    State(state): State<Arc<FakeState>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
    field: &'static str,
    token_type: TokenType,
) -> Response {
    state.verify_requests[slot(token_type)].fetch_add(1, Ordering::SeqCst);
    if !uri.path().starts_with("/v1/") {
        state
            .unversioned_verify_requests
            .fetch_add(1, Ordering::SeqCst);
    }
    if let Some(response) = gate(&state, &headers).await {
        return response;
    }
    let secret = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body.get(field).and_then(Value::as_str).map(str::to_owned));
    let Some(secret) = secret else {
        return clerk_errors(
            StatusCode::BAD_REQUEST,
            "form_param_missing",
            "missing data",
            &format!("{field} must be included."),
        );
    };
    let known = match state.machine_tokens.read() {
        Ok(tokens) => tokens.get(&secret).cloned(),
        Err(poisoned) => poisoned.into_inner().get(&secret).cloned(),
    };
    match known {
        Some((kind, answer)) if kind == token_type => axum::Json(answer).into_response(),
        // Clerk's OAuth endpoint answers an unknown token with 200 `{"active": false}`.
        _ if token_type == TokenType::OAuthToken => {
            axum::Json(json!({ "active": false })).into_response()
        }
        _ => clerk_errors(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            "Resource not found",
        ),
    }
}

impl FakeClerkApi {
    /// Makes `secret` a known machine token of `token_type`: its verify endpoint answers 200
    /// with `answer` (see [`api_key_answer`](Self::api_key_answer) and the others; change
    /// `revoked`, `expired` or `expiration` there to test the refusals). Unknown secrets get
    /// 404 (OAuth: 200 `{"active": false}`), as Clerk answers.
    pub fn add_machine_token(&self, secret: &str, token_type: TokenType, answer: Value) {
        match self.state.machine_tokens.write() {
            Ok(mut tokens) => tokens.insert(secret.to_owned(), (token_type, answer)),
            Err(poisoned) => poisoned
                .into_inner()
                .insert(secret.to_owned(), (token_type, answer)),
        };
    }

    /// A valid API key's verify answer for `subject` (`user_…`, `org_…` or `mch_…`), every
    /// field of the spec's `200` (2026-05-12), scopes `read` and `write`, no expiration.
    pub fn api_key_answer(subject: &str) -> Value {
        json!({
            "object": "api_key", "id": random_hex_id("ak_", 16), "type": "api_key", "subject": subject,
            "name": "FAKE_API_KEY", "description": null, "claims": null,
            "scopes": ["read", "write"], "revoked": false, "revocation_reason": null,
            "expired": false, "expiration": null, "created_by": null, "last_used_at": null,
            "created_at": super::BASE_MS, "updated_at": super::BASE_MS
        })
    }

    /// A valid M2M token's verify answer for machine `subject` (`mch_…`).
    pub fn m2m_answer(subject: &str) -> Value {
        json!({
            "object": "machine_to_machine_token", "id": random_hex_id("mt_", 16), "subject": subject,
            "claims": null, "scopes": [], "revoked": false, "revocation_reason": null,
            "expired": false, "expiration": null, "last_used_at": null,
            "created_at": super::BASE_MS, "updated_at": super::BASE_MS
        })
    }

    /// A valid OAuth access token's verify answer for user `subject`.
    pub fn oauth_answer(subject: &str) -> Value {
        json!({
            "object": "clerk_idp_oauth_access_token", "id": random_hex_id("oat_", 16),
            "client_id": "client_2fakeOAuthApplication000000", "subject": subject,
            "scopes": ["profile", "email"], "revoked": false, "revocation_reason": null,
            "expired": false, "expiration": null,
            "created_at": super::BASE_MS / 1000, "updated_at": super::BASE_MS / 1000
        })
    }

    /// Verify requests received for `token_type`'s endpoint (faulted ones included).
    pub fn verify_requests(&self, token_type: TokenType) -> u64 {
        self.state.verify_requests[slot(token_type)].load(Ordering::SeqCst)
    }

    /// Verify requests that came without the `/v1` prefix (as Clerk's JS SDK sends them).
    pub fn unversioned_verify_requests(&self) -> u64 {
        self.state
            .unversioned_verify_requests
            .load(Ordering::SeqCst)
    }
}
