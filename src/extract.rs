//! [`ClerkUser`]: the verified, synced user, and its Axum extractors.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::token::SessionClaims;

/// The signed-in user of a request, put in the request extensions by [`crate::ClerkSyncLayer`].
///
/// Extract it in a handler as `ClerkUser` (the route must be behind the layer) or
/// `Option<ClerkUser>` (behind [`crate::ClerkSync::optional_layer`]). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct ClerkUser {
    // One shared allocation, so that handing a cached user to a request is one reference
    // count increment.
    inner: Arc<Principal>,
}

#[derive(Debug)]
struct Principal {
    claims: Arc<SessionClaims>,
    tier: Arc<str>,
    synced: bool,
}

impl ClerkUser {
    pub(crate) fn new(claims: Arc<SessionClaims>, tier: Arc<str>, synced: bool) -> Self {
        Self {
            inner: Arc::new(Principal {
                claims,
                tier,
                synced,
            }),
        }
    }

    /// The verified claims, shared.
    pub(crate) fn shared_claims(&self) -> &Arc<SessionClaims> {
        &self.inner.claims
    }

    /// The Clerk user id (`sub`), also the `users.id` of the row.
    pub fn user_id(&self) -> &str {
        &self.inner.claims.sub
    }

    /// The Clerk session id (`sid`).
    pub fn session_id(&self) -> Option<&str> {
        self.inner.claims.sid.as_deref()
    }

    /// All claims of the verified token.
    pub fn claims(&self) -> &SessionClaims {
        &self.inner.claims
    }

    /// The user's tier as stored in the database (or the default tier when not synced).
    pub fn tier(&self) -> &str {
        &self.inner.tier
    }

    /// `true` when the user row is known to exist. Only `false` under
    /// [`crate::FailurePolicy::Open`] while the store is failing.
    pub fn synced(&self) -> bool {
        self.inner.synced
    }
}

/// Rejection of the `ClerkUser` extractor: the route is not behind the layer. A server bug,
/// so a 500 that says how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no ClerkUser in the request extensions: is `ClerkSyncLayer` (clerk.layer()) applied to this route? \
     For routes that allow anonymous requests, use clerk.optional_layer() and extract Option<ClerkUser>"
)]
pub struct MissingClerkLayer;

impl IntoResponse for MissingClerkLayer {
    fn into_response(self) -> Response {
        tracing::error!(code = "clerk_layer_missing", error = %self, "ClerkUser extracted without the layer");
        crate::error::error_response("clerk_layer_missing", &self.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClerkUser {
    type Rejection = MissingClerkLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClerkUser>()
            .cloned()
            .ok_or(MissingClerkLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ClerkUser {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<ClerkUser>().cloned())
    }
}

/// Put in the extensions of requests that passed the optional layer without a token, so the
/// rate limiter can tell "anonymous" from "the sync layer did not run". `network` is the
/// client's network by [`crate::ClientAddress`], when the server provides `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnonymousRequest {
    pub(crate) network: Option<std::net::IpAddr>,
}
