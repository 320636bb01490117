//! [`ClerkApi`]: the few Backend API calls this crate needs — one user, the user list — with
//! timeouts and bounded retries.
//!
//! Retry rules: `429` waits for `Retry-After` (capped by [`RetryPolicy::max_wait`]), `5xx` and
//! connection errors or timeouts wait an exponential backoff with jitter; both use the same
//! bounded attempt budget. Any other `4xx` fails at once with Clerk's error body in the
//! message. The Backend JWKS (`GET /v1/jwks`) is used as a key source by the verifier when
//! `CLERK_SECRET_KEY` is set (see [`crate::KeySource::BackendApi`]).

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;

use crate::config::{ClerkConfig, DEFAULT_API_URL};
use crate::error::ConfigError;
use crate::secret::Secret;
use crate::store::UserProfile;
use crate::store::profile::ClerkUserObject;

/// Largest page `GET /v1/users` serves.
pub const MAX_PAGE_SIZE: u32 = 500;

/// How failed calls are retried. Build one with [`RetryPolicy::new`] (or start from
/// [`RetryPolicy::default`] / [`RetryPolicy::none`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all). Default: 5.
    pub max_retries: u32,
    /// Backoff before the first retry of a `5xx` or connection error; doubles each time.
    /// Default: 500 ms.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts, for backoffs and `Retry-After` alike. Default: 30 s.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// `max_retries` retries after the first attempt; `initial_backoff` before the first retry
    /// of a `5xx` or connection error, doubling each time; no wait (backoff or `Retry-After`)
    /// longer than `max_wait`.
    pub fn new(max_retries: u32, initial_backoff: Duration, max_wait: Duration) -> Self {
        Self {
            max_retries,
            initial_backoff,
            max_wait,
        }
    }

    /// No retries: every failure is final. What the request path uses, where a waiting user
    /// matters more than one more attempt.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (0-based) of a `5xx` or connection error:
    /// `initial_backoff × 2^retry`, capped, then a random point in its upper half (jitter, so
    /// many clients do not retry in lockstep).
    fn backoff(&self, retry: u32) -> Duration {
        let full = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_wait);
        let mut byte = [0u8; 1];
        // A failing RNG gives zero jitter, which is still a valid (upper-bound) wait.
        let _ = aws_lc_rs::rand::fill(&mut byte);
        let half = full / 2;
        half + half.mul_f64(f64::from(byte[0]) / 255.0)
    }
}

/// A failed Backend API call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Clerk refused the request (a `4xx` other than `429`): not retried.
    #[error("Clerk answered {status}: {message}")]
    Rejected {
        /// The HTTP status.
        status: StatusCode,
        /// Clerk's error codes and messages, from its `{"errors": [...]}` body.
        message: String,
    },
    /// Every attempt failed with `429`, `5xx`, a timeout or a connection error.
    #[error("Clerk's Backend API did not answer after {attempts} attempt(s): {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A `2xx` whose body is not what the API documents.
    #[error("unexpected response from Clerk's Backend API: {0}")]
    InvalidResponse(String),
}

/// One page of `GET /v1/users`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct UserPage {
    /// The users of the page, as profiles versioned by Clerk's `updated_at`.
    pub users: Vec<UserProfile>,
    /// The `id` of the page's last user: the `starting_after` cursor of the next page.
    pub last_id: Option<String>,
}

/// Client for the parts of Clerk's Backend API this crate uses; cheap to clone.
#[derive(Clone)]
pub struct ClerkApi {
    client: reqwest::Client,
    base: String,
    secret: Secret,
    retry: RetryPolicy,
}

impl fmt::Debug for ClerkApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkApi")
            .field("base", &self.base)
            .field("secret_key", &self.secret)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ClerkErrors {
    #[serde(default)]
    errors: Vec<ClerkErrorEntry>,
    clerk_trace_id: Option<String>,
}

#[derive(Deserialize)]
struct ClerkErrorEntry {
    code: Option<String>,
    message: Option<String>,
    long_message: Option<String>,
}

/// `code: long_message` for each of Clerk's errors, or the raw body when it is not Clerk's
/// shape (a proxy's HTML page, say), cut to a readable length.
fn describe_error_body(body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ClerkErrors>(body)
        && !parsed.errors.is_empty()
    {
        let mut text = parsed
            .errors
            .iter()
            .map(|e| {
                let code = e.code.as_deref().unwrap_or("unknown");
                let message = e
                    .long_message
                    .as_deref()
                    .or(e.message.as_deref())
                    .unwrap_or("");
                format!("{code}: {message}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(trace) = parsed.clerk_trace_id {
            text.push_str(&format!(" (clerk_trace_id {trace})"));
        }
        return text;
    }
    let raw = String::from_utf8_lossy(body);
    let mut cut: String = raw.chars().take(200).collect();
    if cut.len() < raw.len() {
        cut.push('…');
    }
    if cut.is_empty() {
        "empty body".to_owned()
    } else {
        cut
    }
}

/// Seconds of a `Retry-After` header (Clerk sends whole seconds).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl ClerkApi {
    /// A client for the Backend API at `api_url` (`https://api.clerk.com` in production)
    /// authenticated with the instance's secret key (`sk_...`). Each call times out after
    /// 10 s; failures are retried by [`RetryPolicy::default`].
    pub fn new(api_url: &str, secret_key: &str) -> Result<Self, ConfigError> {
        if !secret_key.starts_with("sk_") {
            return Err(ConfigError::new(
                "CLERK_SECRET_KEY",
                "expected a key starting with `sk_test_` or `sk_live_`",
            ));
        }
        let base = api_url.trim_end_matches('/');
        crate::config::check_url("CLERK_API_URL", base)?;
        Ok(Self {
            client: Self::http_client(Duration::from_secs(10))?,
            base: base.to_owned(),
            secret: Secret::new(secret_key),
            retry: RetryPolicy::default(),
        })
    }

    /// The client for a config's `CLERK_API_URL` and `CLERK_SECRET_KEY`; `None` without a
    /// secret key.
    pub fn from_config(config: &ClerkConfig) -> Result<Option<Self>, ConfigError> {
        config
            .secret_key()
            .map(|secret| Self::new(config.api_url(), secret.expose()))
            .transpose()
    }

    /// Reads `CLERK_SECRET_KEY` (required) and `CLERK_API_URL` (default
    /// `https://api.clerk.com`) from the environment; for tools that need only the API.
    pub fn from_env() -> Result<Self, ConfigError> {
        let secret = std::env::var("CLERK_SECRET_KEY")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "CLERK_SECRET_KEY",
                    "not set: copy the secret key (`sk_...`) from Clerk's dashboard, API keys",
                )
            })?;
        let url = std::env::var("CLERK_API_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        Self::new(url.trim(), secret.trim())
    }

    fn http_client(timeout: Duration) -> Result<reqwest::Client, ConfigError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("clerk-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new("CLERK_API_URL", e.to_string()))
    }

    /// Timeout of each HTTP attempt (connect included). Default: 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        self.client = Self::http_client(timeout)?;
        Ok(self)
    }

    /// How failures are retried. Default: [`RetryPolicy::default`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/users/{user_id}`: the user's profile (primary email, names, username, image),
    /// versioned by its `updated_at`. An unknown user is [`ApiError::Rejected`] with 404.
    pub async fn get_user(&self, user_id: &str) -> Result<UserProfile, ApiError> {
        let url = format!("{}/v1/users/{}", self.base, encode_path_segment(user_id));
        let body = self.get("/v1/users/{id}", &url, &[]).await?;
        let user: ClerkUserObject = serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidResponse(format!("user object: {e}")))?;
        Ok(user.into_profile())
    }

    /// `GET /v1/jwks`: the `kid`s of the instance's signing keys, which tell whether a token
    /// was minted by the instance this secret key belongs to.
    pub(crate) async fn jwks_kids(&self) -> Result<Vec<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Jwks {
            keys: Vec<Jwk>,
        }
        #[derive(serde::Deserialize)]
        struct Jwk {
            kid: Option<String>,
        }
        let body = self
            .get("/v1/jwks", &format!("{}/v1/jwks", self.base), &[])
            .await?;
        let jwks: Jwks = serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidResponse(format!("JWKS: {e}")))?;
        Ok(jwks.keys.into_iter().filter_map(|key| key.kid).collect())
    }

    /// `GET /v1/users?limit=…&starting_after=…`: one page in Clerk's default order (newest
    /// first), after the user `starting_after` when given. `limit` is clamped to 1–500. The
    /// list has ended when a page holds fewer than `limit` users.
    ///
    /// Cursor paging, as Clerk's API reference recommends for long lists: a large `offset`
    /// makes Clerk walk every skipped row and eventually times out.
    pub async fn list_users(
        &self,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<UserPage, ApiError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE).to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(cursor) = starting_after {
            query.push(("starting_after", cursor));
        }
        self.list(&query).await
    }

    /// `GET /v1/users?limit=…&offset=…`: one page by position. Used by the backfill only to
    /// step over a page that keeps failing, since a cursor needs that page's last id.
    pub async fn list_users_at_offset(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<UserPage, ApiError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE).to_string();
        let offset = offset.to_string();
        self.list(&[("limit", limit.as_str()), ("offset", offset.as_str())])
            .await
    }

    async fn list(&self, query: &[(&str, &str)]) -> Result<UserPage, ApiError> {
        let url = format!("{}/v1/users", self.base);
        let body = self.get("/v1/users", &url, query).await?;
        let users: Vec<ClerkUserObject> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidResponse(format!("user list: {e}")))?;
        let last_id = users.last().map(|user| user.id().to_owned());
        Ok(UserPage {
            users: users
                .into_iter()
                .map(ClerkUserObject::into_profile)
                .collect(),
            last_id,
        })
    }

    /// One GET of `url` (whose path is `endpoint`, a template without ids, for the metrics)
    /// with the retry rules; the body of the first `2xx`.
    pub(crate) async fn get(
        &self,
        endpoint: &'static str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<bytes::Bytes, ApiError> {
        self.send(endpoint, || self.client.get(url).query(query))
            .await
    }

    /// One POST of a JSON body to `path` (after the base URL) with the retry rules.
    pub(crate) async fn post_json(
        &self,
        path: &'static str,
        body: &serde_json::Value,
    ) -> Result<bytes::Bytes, ApiError> {
        let url = format!("{}{path}", self.base);
        self.send(path, || self.client.post(&url).json(body)).await
    }

    /// Sends the request `build` makes, authenticated with the secret key, retrying as the
    /// policy says; the body of the first `2xx`.
    async fn send(
        &self,
        endpoint: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<bytes::Bytes, ApiError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let retries_left = attempt <= self.retry.max_retries;
            let sent = build().bearer_auth(self.secret.expose()).send().await;
            let status = match &sent {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            ::metrics::counter!(
                crate::metrics::BACKEND_API_REQUESTS,
                "endpoint" => endpoint,
                "status" => status
            )
            .increment(1);
            let (failure, wait) = match sent {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return response.bytes().await.map_err(|e| ApiError::Unavailable {
                            attempts: attempt,
                            last: format!("reading the body: {e}"),
                        });
                    }
                    let after = retry_after(response.headers());
                    let body = response.bytes().await.unwrap_or_default();
                    let message = describe_error_body(&body);
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let wait = after
                            .unwrap_or(Duration::from_secs(1))
                            .min(self.retry.max_wait);
                        (format!("{status}: {message}"), wait)
                    } else if status.is_server_error() {
                        (
                            format!("{status}: {message}"),
                            self.retry.backoff(attempt - 1),
                        )
                    } else {
                        return Err(ApiError::Rejected { status, message });
                    }
                }
                Err(error) => (
                    format!("request failed: {error}"),
                    self.retry.backoff(attempt - 1),
                ),
            };
            if !retries_left {
                return Err(ApiError::Unavailable {
                    attempts: attempt,
                    last: failure,
                });
            }
            tracing::warn!(
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                failure = %failure,
                "Clerk Backend API call failed, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Percent-encodes everything but unreserved characters, so an id cannot change the path.
pub(crate) fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clerk_error_bodies_become_messages() {
        let body = br#"{"errors":[{"message":"not found","long_message":"User not found","code":"resource_not_found"}],"clerk_trace_id":"t1"}"#;
        assert_eq!(
            describe_error_body(body),
            "resource_not_found: User not found (clerk_trace_id t1)"
        );
        assert_eq!(
            describe_error_body(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(describe_error_body(b""), "empty body");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_in_its_upper_half() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
        };
        for retry in 0..10 {
            let full = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            let wait = policy.backoff(retry);
            assert!(
                wait >= full / 2 && wait <= full,
                "retry {retry}: {wait:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("user_2abc"), "user_2abc");
        assert_eq!(encode_path_segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn constructor_checks_key_and_url() {
        assert!(ClerkApi::new("https://api.clerk.com", "pk_test_x").is_err());
        assert!(ClerkApi::new("api.clerk.com", "sk_test_x").is_err());
        let api = ClerkApi::new("https://api.clerk.com/", "sk_test_x").unwrap();
        assert_eq!(api.base_url(), "https://api.clerk.com");
        assert!(!format!("{api:?}").contains("sk_test_x"));
    }
}
