//! [`RateLimitRejection`]: the limiter's refusals, as an app's response hook sees them.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;

/// See [`RateLimitLayer::on_rejection`](super::RateLimitLayer::on_rejection).
pub(crate) type RejectionHook = Arc<dyn Fn(&RateLimitRejection) -> Response + Send + Sync>;

/// A rejection of the rate limiter, as [`RateLimitLayer::on_rejection`](super::RateLimitLayer::on_rejection) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitRejection {
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl RateLimitRejection {
    pub(crate) fn new(
        code: &'static str,
        message: impl Into<String>,
        retry_after: Option<u64>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after,
        }
    }

    /// `rate_limited` (429), `rate_limit_unavailable` (503) or `rate_limit_misconfigured`
    /// (500).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The status of the default response (from [`crate::ERROR_CODES`]).
    pub fn status(&self) -> StatusCode {
        crate::error::status_of(self.code)
    }

    /// The default message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds until a retry may pass (`Retry-After`), for 429 and 503.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}
