//! Errors: per-request rejections ([`AuthError`]) and start-up errors ([`ConfigError`]).

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// Why a request was rejected by the layer.
///
/// Every variant becomes a JSON response `{"error": "<code>", "message": "..."}` with the status
/// given by [`AuthError::status`]. 401 responses carry `WWW-Authenticate` (RFC 6750); 503 and
/// 429 responses carry `Retry-After`. Messages never contain token bytes or database internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in `Authorization` or the `__session` cookie (401 `missing_token`).
    #[error("no session token: send `Authorization: Bearer <token>` or the `__session` cookie")]
    MissingToken,
    /// The token could not be parsed, or a required claim is missing or mistyped
    /// (401 `malformed_token`).
    #[error("malformed session token: {0}")]
    MalformedToken(Cow<'static, str>),
    /// The signature does not verify, or the token is not RS256 (401 `invalid_signature`).
    #[error("invalid token signature: {0}")]
    InvalidSignature(Cow<'static, str>),
    /// `exp` is in the past, beyond the leeway (401 `token_expired`).
    #[error("the session token has expired")]
    TokenExpired,
    /// `nbf` or `iat` is in the future, beyond the leeway (401 `token_not_yet_valid`).
    #[error("the session token is not valid yet")]
    TokenNotYetValid,
    /// `iss` is not the configured Clerk issuer (401 `invalid_issuer`).
    #[error("the session token was issued by another Clerk instance")]
    InvalidIssuer,
    /// `azp` is missing or not one of the authorized parties (401 `invalid_authorized_party`).
    #[error("the session token's authorized party (azp) is not allowed")]
    InvalidAuthorizedParty,
    /// The header's `cat` names a token category that is not a session token, such as a
    /// machine-to-machine token (401 `invalid_token_category`).
    #[error("this kind of Clerk token is not accepted here; send a session token")]
    InvalidTokenCategory,
    /// `sts` is `pending`: the session has unfinished tasks (401 `session_pending`).
    #[error("the session has pending tasks and is treated as signed out")]
    SessionPending,
    /// A `__session` cookie without a signed-in `__client_uat` cookie beside it: `0` or
    /// absent (the browser signed out), or later than the token's `iat` (the session changed
    /// since the token was minted). As Clerk's SDK decides (401 `session_outdated`).
    #[error("the session cookie is outdated: the browser signed out or changed session")]
    SessionOutdated,
    /// A Clerk token of a type this route does not accept, such as an API key, an M2M token or
    /// an OAuth access token on a session route; refused before any network call (401
    /// `token_type_not_accepted`). Machine tokens never count from a cookie.
    #[error("a token of type `{0}` is not accepted here")]
    TokenTypeNotAccepted(crate::token_type::TokenType),
    /// The machine token was revoked (401 `token_revoked`).
    #[error("the token has been revoked")]
    TokenRevoked,
    /// Clerk does not know this machine token (401 `invalid_token`).
    #[error("the token is not valid")]
    InvalidToken,
    /// Clerk's Backend API could not verify the token now: down, slow, rate limiting, or the
    /// secret key is wrong (503 `verification_unavailable`, with `Retry-After`).
    #[error("the token cannot be verified right now; try again later")]
    VerificationUnavailable {
        /// Seconds to wait, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// Too many tokens from this client needed the Backend API at once (429 `rate_limited`,
    /// with `Retry-After`); a flood of unknown tokens cannot spend the instance's API quota.
    #[error("too many unverified tokens from this client; retry later")]
    VerificationRateLimited {
        /// Seconds to wait, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// No key with the token's `kid`, even after refreshing the key set (401 `unknown_key`).
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// The signing keys could not be fetched and none are cached (503 `keys_unavailable`).
    #[error("the signing keys are unavailable; try again later")]
    KeysUnavailable {
        /// Seconds until the next key fetch may run, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// The user was deleted in Clerk; deleted users are never re-created (403 `user_deleted`).
    #[error("this user has been deleted")]
    UserDeleted,
    /// The user could not be written to the database (503 `sync_unavailable`).
    #[error("the user store is unavailable; try again later")]
    SyncUnavailable,
}

impl AuthError {
    /// The machine-readable code sent as `error` in the JSON body.
    pub fn code(&self) -> &'static str {
        ERROR_CODES[self.index()].0
    }

    /// The HTTP status of the rejection.
    pub fn status(&self) -> StatusCode {
        ERROR_CODES[self.index()].1
    }

    /// `true` when the server, not the client, is at fault (logged at `warn`, not `debug`).
    pub fn is_server_fault(&self) -> bool {
        self.status().is_server_error()
    }

    pub(crate) fn malformed(reason: &'static str) -> Self {
        Self::MalformedToken(Cow::Borrowed(reason))
    }

    pub(crate) fn bad_signature(reason: &'static str) -> Self {
        Self::InvalidSignature(Cow::Borrowed(reason))
    }

    /// This error's row in [`ERROR_CODES`], which also indexes the per-code counters of
    /// [`crate::Stats`]; a code shared with another part of the crate (`rate_limited`) shares
    /// its row.
    pub(crate) fn index(&self) -> usize {
        match self {
            Self::MissingToken => 0,
            Self::MalformedToken(_) => 1,
            Self::InvalidSignature(_) => 2,
            Self::TokenExpired => 3,
            Self::TokenNotYetValid => 4,
            Self::InvalidIssuer => 5,
            Self::InvalidAuthorizedParty => 6,
            Self::InvalidTokenCategory => 7,
            Self::SessionPending => 8,
            Self::UnknownKey => 9,
            Self::KeysUnavailable { .. } => 10,
            Self::UserDeleted => 11,
            Self::SyncUnavailable => 12,
            Self::SessionOutdated => 13,
            Self::TokenTypeNotAccepted(_) => 14,
            Self::TokenRevoked => 15,
            Self::InvalidToken => 16,
            Self::VerificationUnavailable { .. } => 17,
            // The limiter's code: one `rate_limited` for every 429 of the crate.
            Self::VerificationRateLimited { .. } => RATE_LIMITED,
        }
    }

    /// How many distinct [`AuthError`] variants there are (the test checks each has a row).
    #[cfg(test)]
    pub(crate) const COUNT: usize = 19;

    /// `Retry-After` seconds, for the rejections that are worth retrying.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            Self::KeysUnavailable { retry_after_secs }
            | Self::VerificationUnavailable { retry_after_secs }
            | Self::VerificationRateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::SyncUnavailable => Some(1),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3): the scheme alone for a
    /// request without credentials, else `invalid_token` with the message.
    pub(crate) fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::MissingToken => Some(HeaderValue::from_static("Bearer")),
            _ if self.status() == StatusCode::UNAUTHORIZED => {
                // Messages are our own text; quotes and backslashes are dropped so the
                // quoted-string stays valid whatever a future message contains.
                let description: String = self
                    .to_string()
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                    .collect();
                HeaderValue::from_str(&format!(
                    "Bearer error=\"invalid_token\", error_description=\"{description}\""
                ))
                .ok()
            }
            _ => None,
        }
    }
}

/// Every error code this crate answers, with its HTTP status: the layer's rejections
/// ([`AuthError`]), then the webhook endpoint's ([`crate::WebhookError`]), the rate limiter's
/// and the extractor's. Every error response is JSON `{"error": "<code>", "message": "..."}`.
pub const ERROR_CODES: &[(&str, StatusCode)] = &[
    // AuthError, in `AuthError::index` order.
    ("missing_token", StatusCode::UNAUTHORIZED),
    ("malformed_token", StatusCode::UNAUTHORIZED),
    ("invalid_signature", StatusCode::UNAUTHORIZED),
    ("token_expired", StatusCode::UNAUTHORIZED),
    ("token_not_yet_valid", StatusCode::UNAUTHORIZED),
    ("invalid_issuer", StatusCode::UNAUTHORIZED),
    ("invalid_authorized_party", StatusCode::UNAUTHORIZED),
    ("invalid_token_category", StatusCode::UNAUTHORIZED),
    ("session_pending", StatusCode::UNAUTHORIZED),
    ("unknown_key", StatusCode::UNAUTHORIZED),
    ("keys_unavailable", StatusCode::SERVICE_UNAVAILABLE),
    ("user_deleted", StatusCode::FORBIDDEN),
    ("sync_unavailable", StatusCode::SERVICE_UNAVAILABLE),
    ("session_outdated", StatusCode::UNAUTHORIZED),
    ("token_type_not_accepted", StatusCode::UNAUTHORIZED),
    ("token_revoked", StatusCode::UNAUTHORIZED),
    ("invalid_token", StatusCode::UNAUTHORIZED),
    ("verification_unavailable", StatusCode::SERVICE_UNAVAILABLE),
    // WebhookError (its store failure is `sync_unavailable`, above, with the same status).
    ("missing_webhook_headers", StatusCode::BAD_REQUEST),
    ("malformed_webhook_headers", StatusCode::BAD_REQUEST),
    ("webhook_timestamp_out_of_range", StatusCode::UNAUTHORIZED),
    ("invalid_webhook_signature", StatusCode::UNAUTHORIZED),
    ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
    ("malformed_webhook", StatusCode::BAD_REQUEST),
    // The rate limiter.
    ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
    ("rate_limit_unavailable", StatusCode::SERVICE_UNAVAILABLE),
    (
        "rate_limit_misconfigured",
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    // The extractors: on a route without the layer; a caller of the other kind (a machine
    // where a user is needed, or the reverse).
    ("clerk_layer_missing", StatusCode::INTERNAL_SERVER_ERROR),
    ("forbidden", StatusCode::FORBIDDEN),
    // Guards: a role or permission asked without an active organization.
    ("organization_required", StatusCode::FORBIDDEN),
];

/// The row of `rate_limited` in [`ERROR_CODES`].
const RATE_LIMITED: usize = 24;

/// The status of `code` in [`ERROR_CODES`]; 500 for a code not in the table (a bug that the
/// unit tests catch).
pub(crate) fn status_of(code: &str) -> StatusCode {
    ERROR_CODES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or(StatusCode::INTERNAL_SERVER_ERROR, |(_, status)| *status)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// The one error response of this crate: `{"error": code, "message": message}` with the
/// code's status from [`ERROR_CODES`].
pub(crate) fn error_response(code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: code,
        message,
    };
    (status_of(code), Json(body)).into_response()
}

/// Adds `WWW-Authenticate` and `Retry-After` where a response lacks them: the one place both
/// are set, for the default bodies and a custom [`on_rejection`] response alike.
///
/// [`on_rejection`]: crate::ClerkSyncBuilder::on_rejection
pub(crate) fn complete_headers(
    response: &mut Response,
    challenge: Option<HeaderValue>,
    retry_after: Option<u64>,
) {
    let headers = response.headers_mut();
    if let Some(challenge) = challenge
        && !headers.contains_key(header::WWW_AUTHENTICATE)
    {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(seconds) = retry_after
        && !headers.contains_key(header::RETRY_AFTER)
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.code(), &self.to_string());
        complete_headers(&mut response, self.challenge(), self.retry_after());
        response
    }
}

/// The future returned by the methods of [`crate::store::UserStore`] and the other store
/// traits.
pub type StoreFuture<'a, T> = futures_util::future::BoxFuture<'a, Result<T, StoreError>>;

/// A store failure; the layer answers 503 `sync_unavailable` (or passes, failing open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another failure of a custom store (or of a channel's server).
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// The store does not implement this operation.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}

/// A start-up error: a setting is missing or has a bad value.
///
/// The message names the setting by its environment variable (for example
/// `CLERK_PUBLISHABLE_KEY`), also when the value came from the builder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    setting: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }

    /// The setting at fault, named by its environment variable.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_own_row_of_the_code_table() {
        let all = [
            AuthError::MissingToken,
            AuthError::malformed("x"),
            AuthError::bad_signature("x"),
            AuthError::TokenExpired,
            AuthError::TokenNotYetValid,
            AuthError::InvalidIssuer,
            AuthError::InvalidAuthorizedParty,
            AuthError::InvalidTokenCategory,
            AuthError::SessionPending,
            AuthError::UnknownKey,
            AuthError::KeysUnavailable {
                retry_after_secs: 1,
            },
            AuthError::UserDeleted,
            AuthError::SyncUnavailable,
            AuthError::SessionOutdated,
            AuthError::TokenTypeNotAccepted(crate::token_type::TokenType::ApiKey),
            AuthError::TokenRevoked,
            AuthError::InvalidToken,
            AuthError::VerificationUnavailable {
                retry_after_secs: 1,
            },
            AuthError::VerificationRateLimited {
                retry_after_secs: 1,
            },
        ];
        assert_eq!(all.len(), AuthError::COUNT);
        let mut indexes: Vec<usize> = all.iter().map(AuthError::index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), AuthError::COUNT, "one row per variant");
        assert_eq!(ERROR_CODES[RATE_LIMITED].0, "rate_limited");
        for error in &all {
            assert_eq!(error.clone().into_response().status(), error.status());
        }
        // Every code appears once.
        let mut codes: Vec<&str> = ERROR_CODES.iter().map(|(code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ERROR_CODES.len());
    }

    #[test]
    fn unauthorized_responses_follow_rfc_6750() {
        let response = AuthError::TokenExpired.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let value = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert_eq!(
            value,
            "Bearer error=\"invalid_token\", error_description=\"the session token has expired\""
        );
        let missing = AuthError::MissingToken.into_response();
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn unavailable_responses_carry_retry_after() {
        let response = AuthError::KeysUnavailable {
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response = AuthError::SyncUnavailable.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
