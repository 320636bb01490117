//! The Backend API's three verify endpoints, as calls of [`ClerkApi`].

use serde_json::json;

use super::token::{Verdict, verdict};
use crate::clerk_api::{ApiError, ClerkApi};
use crate::time::unix_now_ms;
use crate::token_type::TokenType;

/// Where the verify endpoints live, relative to `CLERK_API_URL`, and the body field of each.
///
/// Clerk's JS SDK (`@clerk/backend`, the SDK most used in production) calls them without the
/// `/v1` prefix (it builds these paths with `skipApiVersionInUrl`); the OpenAPI spec and the Go
/// SDK put them under `/v1`. This follows the JS SDK, and this is the one place to change it.
fn endpoint(token_type: TokenType) -> Option<(&'static str, &'static str)> {
    match token_type {
        TokenType::ApiKey => Some(("/api_keys/verify", "secret")),
        TokenType::M2mToken => Some(("/m2m_tokens/verify", "token")),
        TokenType::OAuthToken => Some(("/oauth_applications/access_tokens/verify", "access_token")),
        TokenType::SessionToken => None,
    }
}

impl ClerkApi {
    /// Asks the Backend API about an opaque machine token (`ak_…`, `mt_…`, `oat_…`) of
    /// `token_type`, with the secret key. Unknown or malformed tokens (404, 400, 422, OAuth's
    /// `{"active": false}`) are [`Verdict::Invalid`]; a `200` that says revoked or expired is
    /// refused ([`Verdict::Revoked`], [`Verdict::Expired`]). Any other failure is an
    /// [`ApiError`]: a 401 or 403 means the secret key is wrong, a 429, `5xx` or timeout that
    /// Clerk cannot answer now. A session token is [`ApiError::InvalidResponse`] without a call.
    pub async fn verify_machine_token(
        &self,
        token_type: TokenType,
        token: &str,
    ) -> Result<Verdict, ApiError> {
        let Some((path, field)) = endpoint(token_type) else {
            return Err(ApiError::InvalidResponse(
                "session tokens are verified locally, not by the Backend API".to_owned(),
            ));
        };
        let answer = self.post_json(path, &json!({ field: token })).await;
        let body = match answer {
            Ok(body) => body,
            Err(ApiError::Rejected { status, .. })
                if matches!(status.as_u16(), 400 | 404 | 422) =>
            {
                return Ok(Verdict::Invalid);
            }
            Err(error) => return Err(error),
        };
        let now_ms = unix_now_ms();
        verdict(token_type, &body, now_ms)
            .map_err(|reason| ApiError::InvalidResponse(format!("{path}: {reason}")))
    }
}
