//! Errors: per-request rejections ([`AuthError`]) and start-up errors ([`ConfigError`]).

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// Why a request was rejected by the layer.
///
/// Every variant becomes a JSON response `{"error": "<code>", "message": "..."}` with the status
/// given by [`AuthError::status`]. 401 responses carry `WWW-Authenticate` (RFC 6750) and 503
/// responses carry `Retry-After`. Messages never contain token bytes or database internals.
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
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedToken(_) => "malformed_token",
            Self::InvalidSignature(_) => "invalid_signature",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAuthorizedParty => "invalid_authorized_party",
            Self::InvalidTokenCategory => "invalid_token_category",
            Self::SessionPending => "session_pending",
            Self::SessionOutdated => "session_outdated",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::UserDeleted => "user_deleted",
            Self::SyncUnavailable => "sync_unavailable",
        }
    }

    /// The HTTP status of the rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UserDeleted => StatusCode::FORBIDDEN,
            Self::KeysUnavailable { .. } | Self::SyncUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
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

    /// Index of this error in [`crate::Stats`] counters; one slot per code.
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
        }
    }

    /// Every code, in [`AuthError::index`] order.
    pub(crate) const CODES: [&'static str; 14] = [
        "missing_token",
        "malformed_token",
        "invalid_signature",
        "token_expired",
        "token_not_yet_valid",
        "invalid_issuer",
        "invalid_authorized_party",
        "invalid_token_category",
        "session_pending",
        "unknown_key",
        "keys_unavailable",
        "user_deleted",
        "sync_unavailable",
        "session_outdated",
    ];
}

/// The JSON body of every error response of this crate.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: &'a str,
    pub(crate) message: &'a str,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let mut response = (
            self.status(),
            Json(ErrorBody {
                error: self.code(),
                message: &message,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            // RFC 6750 §3.1: a request without credentials gets the scheme and no error code.
            Self::MissingToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ if self.status() == StatusCode::UNAUTHORIZED => {
                // Messages are our own text; quotes and backslashes are dropped so the
                // quoted-string stays valid whatever a future message contains.
                let description: String = message
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                    .collect();
                let value =
                    format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Self::KeysUnavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::SyncUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
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
    fn codes_table_matches_variants() {
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
        ];
        assert_eq!(all.len(), AuthError::CODES.len());
        for error in &all {
            assert_eq!(AuthError::CODES[error.index()], error.code());
        }
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
