//! [`RequireLayer`]: a route guard over [`Check`], and [`Authorized`], the same as an
//! extractor (beside `authz`, which `extract` needs: the guard needs both).

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Extensions, Request, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::authz::{Check, Denial, Reverification};
use crate::error::{AuthError, error_response};
use crate::extract::{AnonymousRequest, ClerkMachine, ClerkUser, MissingClerkLayer};
use crate::layer::ResponseFuture;

/// Why a guard refused a request, as a response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardRejection {
    /// No signed-in caller (an anonymous request of the optional layer): 401 `missing_token`.
    SignedOut,
    /// A machine called: 403 `forbidden`.
    NotAUser,
    /// A role or permission was asked and the session has no active organization: 403
    /// `organization_required`.
    OrganizationRequired,
    /// Something asked is missing: 403 `forbidden`, the message names it.
    Forbidden(String),
    /// The session's factors were not verified recently enough: 403 in Clerk's own shape
    /// (`{"clerk_error": {"type": "forbidden", "reason": "reverification-error", "metadata":
    /// {"reverification": {"level", "afterMinutes"}}}}`), which Clerk's frontend
    /// `useReverification` answers by asking the user to verify again.
    Reverification(Reverification),
    /// The route is not behind the sync layer: 500 `clerk_layer_missing`.
    MissingLayer,
}

impl GuardRejection {
    /// Decides `check` for the caller in `extensions`, and hands back the user.
    pub(crate) fn check<'e>(
        extensions: &'e Extensions,
        check: &Check,
    ) -> Result<&'e ClerkUser, Self> {
        let Some(user) = extensions.get::<ClerkUser>() else {
            return Err(if extensions.get::<ClerkMachine>().is_some() {
                Self::NotAUser
            } else if extensions.get::<AnonymousRequest>().is_some() {
                Self::SignedOut
            } else {
                Self::MissingLayer
            });
        };
        match check.decide(user.authorization()) {
            Ok(()) => Ok(user),
            Err(Denial::NoOrganization) => Err(Self::OrganizationRequired),
            Err(Denial::Missing(what)) => Err(Self::Forbidden(what)),
            Err(Denial::Reverification(reverification)) => {
                Err(Self::Reverification(reverification))
            }
        }
    }
}

impl IntoResponse for GuardRejection {
    fn into_response(self) -> Response {
        match self {
            Self::SignedOut => AuthError::MissingToken.into_response(),
            Self::NotAUser => error_response(
                "forbidden",
                "this route needs a user; the caller is a machine or an organization",
            ),
            Self::OrganizationRequired => error_response(
                "organization_required",
                "this route needs an active organization: select one in the app, then retry",
            ),
            Self::Forbidden(what) => {
                tracing::debug!(code = "forbidden", missing = %what, "guard refused");
                error_response("forbidden", &format!("this route needs {what}"))
            }
            Self::Reverification(reverification) => {
                let (level, after_minutes) = reverification.requirement();
                tracing::debug!(
                    code = "reverification",
                    level = level.as_str(),
                    after_minutes,
                    "guard refused"
                );
                let body = serde_json::json!({"clerk_error": {
                    "type": "forbidden",
                    "reason": "reverification-error",
                    "metadata": {"reverification": {
                        "level": level.as_str(), "afterMinutes": after_minutes,
                    }},
                }});
                (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
            }
            Self::MissingLayer => MissingClerkLayer.into_response(),
        }
    }
}

/// Protects a route with a [`Check`]; made by [`crate::ClerkSync::require`] or
/// [`RequireLayer::new`]. Put it inside the sync layer (it reads the [`ClerkUser`] the layer
/// left). Refusals are responses ([`GuardRejection`]), never service errors.
#[derive(Debug, Clone)]
pub struct RequireLayer {
    check: Arc<Check>,
}

impl RequireLayer {
    /// A guard that lets a request through when its user has everything `check` asks.
    pub fn new(check: Check) -> Self {
        Self {
            check: Arc::new(check),
        }
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Require {
            inner,
            check: self.check.clone(),
        }
    }
}

/// The service of [`RequireLayer`].
#[derive(Debug, Clone)]
pub struct Require<S> {
    inner: S,
    check: Arc<Check>,
}

impl<S, B> Service<Request<B>> for Require<S>
where
    S: Service<Request<B>>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = S::Error;
    // The sync layer's response future: the same two states (the inner call, or an answer).
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match GuardRejection::check(request.extensions(), &self.check) {
            Ok(_) => ResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => ResponseFuture::ready(rejection.into_response()),
        }
    }
}

/// A check known at compile time, for [`Authorized`].
///
/// ```
/// use clerk_sync::Requirement;
/// use clerk_sync::authz::Check;
///
/// struct ReadInvoices;
///
/// impl Requirement for ReadInvoices {
///     fn check() -> Check {
///         Check::permission("org:invoices:read")
///     }
/// }
/// ```
pub trait Requirement: Send + Sync + 'static {
    /// What the caller must have.
    fn check() -> Check;
}

/// The extractor form of [`RequireLayer`]: the request's [`ClerkUser`], when it has what `R`
/// asks; otherwise the same [`GuardRejection`].
#[derive(Debug, Clone)]
pub struct Authorized<R>(pub ClerkUser, PhantomData<fn() -> R>);

impl<R> Authorized<R> {
    /// The user.
    pub fn user(&self) -> &ClerkUser {
        &self.0
    }
}

impl<R: Requirement, S: Send + Sync> FromRequestParts<S> for Authorized<R> {
    type Rejection = GuardRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let user = GuardRejection::check(&parts.extensions, &R::check())?;
        Ok(Self(user.clone(), PhantomData))
    }
}
