//! [`RateLimitLayer`]: per-user limits by tier, applied after the sync layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::headers::{add_headers, secs_ceil};
use super::limits::{Limit, TierLimits};
use super::memory::MemoryRateLimitStore;
use super::rejection::{RateLimitRejection, RejectionHook};
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::error::{complete_headers, error_response};
use crate::extract::AnonymousRequest;
use crate::extract::{ClerkMachine, ClerkUser};
use crate::log_throttle::Throttle;
use crate::response_state::LayerState;

/// What happens to requests that passed [`crate::ClerkSync::optional_layer`] without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AnonymousPolicy {
    /// No limit (the default).
    #[default]
    PassThrough,
    /// Limited by the client's network, which needs `ConnectInfo<SocketAddr>`
    /// (`into_make_service_with_connect_info`); without it the request gets a 500 saying so.
    /// The client and its network come from [`crate::ClerkSyncBuilder::client_address`]:
    /// IPv6 by /64 and IPv4 by address by default, forwarded addresses read only from
    /// trusted proxies.
    ByIp(Limit),
}

/// What happens when the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreFailurePolicy {
    /// Let the request through without rate-limit headers (the default): a limiter outage
    /// should not become an API outage. Failures are counted
    /// ([`RateLimitLayer::stats`]) and reported in one `error` line a minute with their count.
    #[default]
    Allow,
    /// Answer 503 `rate_limit_unavailable`.
    Deny,
}

/// Limits each user by the limit of their synced tier; put it **inside** the sync layer.
///
/// A user's sessions, API keys and OAuth tokens share one budget (keyed by user id);
/// machines are limited by machine id and organization-owned API keys by organization id,
/// under [`TierLimits::machines`] and [`TierLimits::organizations`].
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
/// let limits = TierLimits::new(Limit::per_minute(60).unwrap())
///     .tier("pro", Limit::per_minute(600).unwrap());
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
    failures: Arc<FailureReport>,
    on_rejection: Option<RejectionHook>,
    /// Members of an active organization share its budget, under its tier.
    per_organization: bool,
}

impl Settings {
    /// The hook's response or the JSON default; `Retry-After` added where it applies and is
    /// missing.
    fn reject(&self, rejection: &RateLimitRejection) -> Response {
        let mut response = match &self.on_rejection {
            Some(hook) => hook(rejection),
            None => error_response(rejection.code(), rejection.message()),
        };
        complete_headers(&mut response, None, rejection.retry_after());
        response
    }

    fn too_many_requests(&self, subject: &Subject, limit: Limit, decision: &Decision) -> Response {
        let retry_after = secs_ceil(decision.retry_after.unwrap_or(decision.reset)).max(1);
        if let Subject::User(user) = subject {
            tracing::debug!(user.id = user.user_id(), tier = user.tier(), %limit, "rate limited");
        }
        let message = format!("rate limit of {limit} exceeded; retry in {retry_after} s");
        let rejection = RateLimitRejection::new("rate_limited", message, Some(retry_after));
        let mut response = self.reject(&rejection);
        add_headers(response.headers_mut(), limit, decision);
        response
    }

    fn misconfigured(&self, message: &'static str) -> Response {
        tracing::error!(
            code = "rate_limit_misconfigured",
            reason = message,
            "rate limiter misconfigured"
        );
        self.reject(&RateLimitRejection::new(
            "rate_limit_misconfigured",
            message,
            None,
        ))
    }
}

/// Counters of one [`RateLimitLayer`] (shared by every service it made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Requests whose store call failed (passed or refused by the [`StoreFailurePolicy`]).
    pub store_failures: u64,
}

/// How often a failing store is reported: one `error` line per interval at most, with the
/// number of failures since the last line, instead of a line per request.
const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Counts store failures and logs them at most once per [`FAILURE_REPORT_INTERVAL`].
#[derive(Debug)]
struct FailureReport(Throttle);

impl Default for FailureReport {
    fn default() -> Self {
        Self(Throttle::new(FAILURE_REPORT_INTERVAL))
    }
}

impl FailureReport {
    fn record(&self, error: &dyn std::fmt::Display, policy: StoreFailurePolicy) {
        let Some(failures) = self.0.hit() else {
            return;
        };
        let effect = match policy {
            StoreFailurePolicy::Allow => "requests pass UNLIMITED",
            StoreFailurePolicy::Deny => "requests are refused with 503",
        };
        tracing::error!(
            failures,
            total = self.0.total(),
            %error,
            "rate-limit store failing ({failures} failure(s) since the last report; {effect}); \
             reported at most once a minute"
        );
    }
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
                failures: Arc::default(),
                on_rejection: None,
                per_organization: false,
            },
        }
    }

    /// Counters since this layer was made.
    pub fn stats(&self) -> RateLimitStats {
        RateLimitStats {
            store_failures: self.settings.failures.0.total(),
        }
    }

    /// How anonymous requests are treated. Default: [`AnonymousPolicy::PassThrough`].
    pub fn anonymous(mut self, policy: AnonymousPolicy) -> Self {
        self.settings.anonymous = policy;
        self
    }

    /// Keys a session with an active organization by that organization (`org:<id>`, as its
    /// API keys are) under its tier ([`ClerkUser::organization_tier`]): members share one
    /// budget. Without an active organization a user keeps their own key and tier; with a
    /// store that keeps no organizations, the organization's key is used under the member's
    /// tier. Default: off (every user has their own budget).
    pub fn per_organization(mut self) -> Self {
        self.settings.per_organization = true;
        self
    }

    /// What happens when the store fails. Default: [`StoreFailurePolicy::Allow`].
    pub fn on_store_failure(mut self, policy: StoreFailurePolicy) -> Self {
        self.settings.on_store_failure = policy;
        self
    }

    /// Shapes the limiter's rejections (429, 503, 500) instead of the default JSON body, as
    /// [`crate::ClerkSyncBuilder::on_rejection`] does for the auth layer's. The crate still
    /// adds `Retry-After` when the hook's response lacks it, and the `RateLimit-*` headers to
    /// a 429. Default: the JSON body.
    pub fn on_rejection(
        mut self,
        hook: impl Fn(&RateLimitRejection) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.settings.on_rejection = Some(Arc::new(hook));
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
    /// A member, paying from their active organization's budget.
    Member(ClerkUser),
    Machine(ClerkMachine),
    Ip(std::net::IpAddr),
}

impl Subject {
    fn key(&self) -> RateLimitKey<'_> {
        match self {
            Self::User(user) => RateLimitKey::User(user.user_id()),
            Self::Member(user) => match user.organization() {
                Some(org) => RateLimitKey::Organization(&org.id),
                None => RateLimitKey::User(user.user_id()),
            },
            Self::Machine(machine) => match machine.org_id() {
                Some(org) => RateLimitKey::Organization(org),
                None => RateLimitKey::Machine(machine.subject()),
            },
            Self::Ip(ip) => RateLimitKey::Ip(*ip),
        }
    }
}

/// Counts `decision` in `clerk_sync_rate_limit_decisions_total`.
fn record(decision: Decision) -> Decision {
    crate::metrics::rate_limit_decided(decision.allowed);
    decision
}

impl<S> RateLimit<S> {
    /// Who pays for this request and under which limit; `Ok(None)` when nobody does, `Err`
    /// with the fix when the layers are set up wrong.
    fn subject<B>(&self, request: &Request<B>) -> Result<Option<(Subject, Limit)>, &'static str> {
        let extensions = request.extensions();
        if let Some(user) = extensions.get::<ClerkUser>() {
            let limits = &self.settings.limits;
            if self.settings.per_organization && user.organization().is_some() {
                let tier = user.organization_tier().unwrap_or(user.tier());
                let limit = limits.for_tier(tier).limit();
                return Ok(limit.map(|limit| (Subject::Member(user.clone()), limit)));
            }
            let limit = limits.for_tier(user.tier()).limit();
            return Ok(limit.map(|limit| (Subject::User(user.clone()), limit)));
        }
        if let Some(machine) = extensions.get::<ClerkMachine>() {
            let limits = &self.settings.limits;
            let limit = match machine.org_id() {
                Some(_) => limits.for_organization(),
                None => limits.for_machine(),
            };
            return Ok(limit
                .limit()
                .map(|limit| (Subject::Machine(machine.clone()), limit)));
        }
        let Some(anonymous) = extensions.get::<AnonymousRequest>() else {
            return Err(
                "RateLimitLayer found no ClerkUser: the Clerk sync layer must run first. \
                 With ServiceBuilder, add clerk.layer() before RateLimitLayer; with \
                 Router::layer, call .layer(RateLimitLayer) before .layer(clerk.layer())",
            );
        };
        match self.settings.anonymous {
            AnonymousPolicy::PassThrough => Ok(None),
            AnonymousPolicy::ByIp(limit) => match anonymous.network {
                Some(network) => Ok(Some((Subject::Ip(network), limit))),
                None => Err(
                    "AnonymousPolicy::ByIp needs the client address: serve the app with \
                     `into_make_service_with_connect_info::<SocketAddr>()`",
                ),
            },
        }
    }
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
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (subject, limit) = match self.subject(&request) {
            Ok(Some(found)) => found,
            Ok(None) => return ResponseFuture::inner(self.inner.call(request), None),
            Err(fix) => return ResponseFuture::ready(self.settings.misconfigured(fix)),
        };
        // A store that answers without I/O is decided here, and the service that was polled
        // ready is called directly: no clone of it, no boxed future.
        if let Some(decision) = self
            .settings
            .store
            .check_now(subject.key(), limit)
            .map(record)
        {
            return if decision.allowed {
                ResponseFuture::inner(self.inner.call(request), Some((limit, decision)))
            } else {
                ResponseFuture::ready(self.settings.too_many_requests(&subject, limit, &decision))
            };
        }
        // See ClerkSyncService::call: call the service that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        ResponseFuture::boxed(async move {
            let decision = match settings.store.check(subject.key(), limit).await {
                Ok(decision) => record(decision),
                Err(error) => {
                    crate::metrics::rate_limit_store_error();
                    settings.failures.record(&error, settings.on_store_failure);
                    return match settings.on_store_failure {
                        StoreFailurePolicy::Allow => {
                            inner.call(request).await.map(IntoResponse::into_response)
                        }
                        StoreFailurePolicy::Deny => Ok(settings.reject(&RateLimitRejection::new(
                            "rate_limit_unavailable",
                            "the rate limiter is unavailable; try again later",
                            Some(1),
                        ))),
                    };
                }
            };
            if !decision.allowed {
                return Ok(settings.too_many_requests(&subject, limit, &decision));
            }
            let mut response = inner.call(request).await?.into_response();
            add_headers(response.headers_mut(), limit, &decision);
            Ok(response)
        })
    }
}

pin_project! {
    /// Response future of [`RateLimit`].
    pub struct ResponseFuture<F, E> {
        // The inner service's future carries the headers to add to its response.
        #[pin]
        state: LayerState<F, E, Option<(Limit, Decision)>>,
    }
}

impl<F, E> ResponseFuture<F, E> {
    fn inner(future: F, headers: Option<(Limit, Decision)>) -> Self {
        Self {
            state: LayerState::inner(future, headers),
        }
    }

    fn ready(response: Response) -> Self {
        Self {
            state: LayerState::ready(response),
        }
    }

    fn boxed(future: impl Future<Output = Result<Response, E>> + Send + 'static) -> Self {
        Self {
            state: LayerState::boxed(future),
        }
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<R, E>>,
    R: IntoResponse,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().state.poll_with(cx, |response, headers| {
            if let Some((limit, decision)) = headers {
                add_headers(response.headers_mut(), limit, &decision);
            }
        })
    }
}
