//! [`RateLimitLayer`]: per-user limits by tier, applied after the sync layer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use super::limits::{Limit, TierLimits};
use super::memory::MemoryRateLimitStore;
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::error::ErrorBody;
use crate::extract::ClerkUser;
use crate::layer::AnonymousRequest;

/// What happens to requests that passed [`crate::ClerkSync::optional_layer`] without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AnonymousPolicy {
    /// No limit (the default).
    #[default]
    PassThrough,
    /// Limited by client IP, which needs `ConnectInfo<SocketAddr>`
    /// (`into_make_service_with_connect_info`); without it the request gets a 500 saying so.
    ByIp(Limit),
}

/// What happens when the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreFailurePolicy {
    /// Let the request through without rate-limit headers and log the error (the default):
    /// a limiter outage should not become an API outage.
    #[default]
    Allow,
    /// Answer 503 `rate_limit_unavailable`.
    Deny,
}

/// Limits each user by the limit of their synced tier; put it **inside** the sync layer.
///
/// With `ServiceBuilder`, layers run in the order written; with `Router::layer`, the last call
/// is outermost:
///
/// ```
/// # fn doc(clerk: clerk_sync::ClerkSync) {
/// use axum::{Router, routing::get};
/// use clerk_sync::{Limit, RateLimitLayer, TierLimits};
/// use tower::ServiceBuilder;
///
/// let limits = TierLimits::new(Limit::per_minute(60)).tier("pro", Limit::per_minute(600));
/// let app: Router = Router::new()
///     .route("/me", get(|| async { "hi" }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(clerk.layer()) // first: verify and sync
///             .layer(RateLimitLayer::per_tier(limits)), // then: limit by the synced tier
///     );
/// # }
/// ```
///
/// Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset` (seconds); refused requests get 429 `rate_limited` with `Retry-After`.
/// Unlimited tiers get no headers.
#[derive(Clone)]
pub struct RateLimitLayer {
    settings: Settings,
}

#[derive(Clone)]
struct Settings {
    limits: Arc<TierLimits>,
    store: Arc<dyn RateLimitStore>,
    anonymous: AnonymousPolicy,
    on_store_failure: StoreFailurePolicy,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.settings.limits)
            .field("anonymous", &self.settings.anonymous)
            .field("on_store_failure", &self.settings.on_store_failure)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Limits by tier with a [`MemoryRateLimitStore`] (one process).
    pub fn per_tier(limits: TierLimits) -> Self {
        Self::with_store(limits, MemoryRateLimitStore::default())
    }

    /// Limits by tier with `store`, for example [`crate::PgRateLimitStore`] to share one
    /// limit between processes.
    pub fn with_store(limits: TierLimits, store: impl RateLimitStore) -> Self {
        Self {
            settings: Settings {
                limits: Arc::new(limits),
                store: Arc::new(store),
                anonymous: AnonymousPolicy::default(),
                on_store_failure: StoreFailurePolicy::default(),
            },
        }
    }

    /// How anonymous requests are treated. Default: [`AnonymousPolicy::PassThrough`].
    pub fn anonymous(mut self, policy: AnonymousPolicy) -> Self {
        self.settings.anonymous = policy;
        self
    }

    /// What happens when the store fails. Default: [`StoreFailurePolicy::Allow`].
    pub fn on_store_failure(mut self, policy: StoreFailurePolicy) -> Self {
        self.settings.on_store_failure = policy;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    settings: Settings,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

enum Subject {
    User(ClerkUser),
    Ip(std::net::IpAddr),
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code,
            message,
        }),
    )
        .into_response()
}

fn secs_ceil(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

fn add_headers(headers: &mut HeaderMap, limit: Limit, decision: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(limit.count()));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert(
        "ratelimit-reset",
        HeaderValue::from(secs_ceil(decision.reset)),
    );
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // See ClerkSyncService::call: call the service that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        let extensions = request.extensions();
        let subject = match (
            extensions.get::<ClerkUser>(),
            extensions.get::<AnonymousRequest>(),
            settings.anonymous,
        ) {
            (Some(user), _, _) => settings
                .limits
                .for_tier(user.tier())
                .map(|limit| (Subject::User(user.clone()), limit)),
            (None, Some(_), AnonymousPolicy::PassThrough) => None,
            (None, Some(_), AnonymousPolicy::ByIp(limit)) => {
                match extensions.get::<ConnectInfo<SocketAddr>>() {
                    Some(ConnectInfo(addr)) => Some((Subject::Ip(addr.ip()), limit)),
                    None => {
                        return ResponseFuture::ready(misconfigured(
                            "AnonymousPolicy::ByIp needs the client address: serve the app with \
                         `into_make_service_with_connect_info::<SocketAddr>()`",
                        ));
                    }
                }
            }
            (None, None, _) => {
                return ResponseFuture::ready(misconfigured(
                    "RateLimitLayer found no ClerkUser: the Clerk sync layer must run first. \
                     With ServiceBuilder, add clerk.layer() before RateLimitLayer; with \
                     Router::layer, call .layer(RateLimitLayer) before .layer(clerk.layer())",
                ));
            }
        };
        let Some((subject, limit)) = subject else {
            return ResponseFuture::new(async move {
                inner.call(request).await.map(IntoResponse::into_response)
            });
        };
        ResponseFuture::new(async move {
            let key = match &subject {
                Subject::User(user) => RateLimitKey::User(user.user_id()),
                Subject::Ip(ip) => RateLimitKey::Ip(*ip),
            };
            let decision = match settings.store.check(key, limit).await {
                Ok(decision) => decision,
                Err(error) => {
                    tracing::error!(%error, "rate-limit store failed");
                    return match settings.on_store_failure {
                        StoreFailurePolicy::Allow => {
                            inner.call(request).await.map(IntoResponse::into_response)
                        }
                        StoreFailurePolicy::Deny => {
                            let mut response = problem(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "rate_limit_unavailable",
                                "the rate limiter is unavailable; try again later",
                            );
                            response
                                .headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                            Ok(response)
                        }
                    };
                }
            };
            if !decision.allowed {
                let retry_after = secs_ceil(decision.retry_after.unwrap_or(decision.reset)).max(1);
                if let Subject::User(user) = &subject {
                    tracing::debug!(user.id = user.user_id(), tier = user.tier(), %limit, "rate limited");
                }
                let message = format!("rate limit of {limit} exceeded; retry in {retry_after} s");
                let mut response = problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &message);
                let headers = response.headers_mut();
                add_headers(headers, limit, &decision);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                return Ok(response);
            }
            let mut response = inner.call(request).await?.into_response();
            add_headers(response.headers_mut(), limit, &decision);
            Ok(response)
        })
    }
}

fn misconfigured(message: &str) -> Response {
    tracing::error!("{message}");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "rate_limit_misconfigured",
        message,
    )
}

/// Response future of [`RateLimit`].
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>,
}

impl<E: Send + 'static> ResponseFuture<E> {
    fn new(future: impl Future<Output = Result<Response, E>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }

    fn ready(response: Response) -> Self {
        Self::new(std::future::ready(Ok(response)))
    }
}

impl<E> std::fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
