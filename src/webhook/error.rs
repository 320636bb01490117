//! [`WebhookError`]: why a delivery was rejected.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

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

    /// The HTTP status (from [`crate::ERROR_CODES`]).
    pub fn status(&self) -> StatusCode {
        crate::error::status_of(self.code())
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let mut response = crate::error::error_response(self.code(), &self.to_string());
        // RFC 9110 §15.5.2: a 401 names the scheme that would authenticate the request, here
        // Svix's signed headers.
        let challenge = (self.status() == StatusCode::UNAUTHORIZED).then(|| {
            HeaderValue::from_static(
                "Svix realm=\"clerk-webhooks\", headers=\"svix-id svix-timestamp svix-signature\"",
            )
        });
        let retry_after = (self == Self::StoreUnavailable).then_some(5);
        crate::error::complete_headers(&mut response, challenge, retry_after);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_crate_table_with_its_status() {
        let expected = [
            (
                WebhookError::MissingHeader("svix-id"),
                StatusCode::BAD_REQUEST,
            ),
            (
                WebhookError::MalformedHeader("svix-id"),
                StatusCode::BAD_REQUEST,
            ),
            (WebhookError::TimestampOutOfRange, StatusCode::UNAUTHORIZED),
            (WebhookError::InvalidSignature, StatusCode::UNAUTHORIZED),
            (WebhookError::PayloadTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
            (
                WebhookError::MalformedPayload("x".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                WebhookError::StoreUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (error, status) in expected {
            assert!(
                crate::ERROR_CODES
                    .iter()
                    .any(|(code, _)| *code == error.code()),
                "{} is in ERROR_CODES",
                error.code()
            );
            assert_eq!(error.status(), status, "{}", error.code());
            assert_eq!(error.clone().into_response().status(), status);
        }
        let unauthorized = WebhookError::InvalidSignature.into_response();
        assert!(
            unauthorized
                .headers()
                .contains_key(http::header::WWW_AUTHENTICATE)
        );
        let unavailable = WebhookError::StoreUnavailable.into_response();
        assert_eq!(unavailable.headers()[http::header::RETRY_AFTER], "5");
    }
}
