//! [`ClerkSyncLayer`]: verify the token, sync the user, then call the inner service.
//!
//! ```
//! # async fn doc(clerk: clerk_sync::ClerkSync) {
//! use axum::{Router, routing::get};
//! use clerk_sync::ClerkUser;
//!
//! async fn me(user: ClerkUser) -> String {
//!     format!("{} ({})", user.user_id(), user.tier())
//! }
//!
//! let app: Router = Router::new().route("/me", get(me)).layer(clerk.layer());
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use std::sync::Arc;

use crate::core::{Core, Decision, Mode};
use crate::response_state::LayerState;
use crate::token_cache::Caller;
use crate::token_type::{Accepted, TokenType};

/// Hands the caller to the inner service.
fn insert<B>(request: &mut Request<B>, caller: Caller) {
    match caller {
        Caller::User(user) => {
            request.extensions_mut().insert(user);
        }
        Caller::Machine(machine) => {
            request.extensions_mut().insert(machine);
        }
    }
}

/// Applies [`ClerkSyncService`]; made by [`crate::ClerkSync::layer`] or
/// [`crate::ClerkSync::optional_layer`].
///
/// A layer takes session tokens only, until [`accepts`](Self::accepts) or
/// [`accepts_any`](Self::accepts_any) says otherwise.
#[derive(Debug, Clone)]
pub struct ClerkSyncLayer {
    core: Arc<Core>,
    mode: Mode,
    accepted: Accepted,
}

impl ClerkSyncLayer {
    pub(crate) fn new(core: Arc<Core>, mode: Mode) -> Self {
        Self {
            core,
            mode,
            accepted: Accepted::SESSIONS,
        }
    }

    /// The token types this layer takes, instead of session tokens only, as Clerk's
    /// `authenticateRequest({ acceptsToken })`. A token of another type is 401
    /// `token_type_not_accepted` before any network call.
    ///
    /// Types are told apart as Clerk's SDK does: the prefixes `ak_` (API key), `mt_` (M2M)
    /// and `oat_` (OAuth) are opaque tokens that the Backend API verifies, with the secret
    /// key; a JWT whose `sub` starts with `mch_` is an M2M token, one whose header `typ` is
    /// `at+jwt` or `application/at+jwt` an OAuth access token, verified locally with the
    /// instance keys; any other JWT is a session token. Machine tokens are read from
    /// `Authorization` only, never from cookies. Callers backed by a user (`user_…`
    /// subjects) are synced like sessions and reach handlers as [`crate::ClerkUser`];
    /// machines and organizations as [`crate::ClerkMachine`] ([`crate::ClerkPrincipal`]
    /// takes either). An empty list takes nothing.
    ///
    /// ```
    /// # async fn doc(clerk: clerk_sync::ClerkSync) {
    /// use clerk_sync::TokenType;
    ///
    /// let api = clerk.layer().accepts([TokenType::SessionToken, TokenType::ApiKey]);
    /// # }
    /// ```
    pub fn accepts(mut self, types: impl IntoIterator<Item = TokenType>) -> Self {
        self.accepted = Accepted::of(types);
        self.warn_without_secret_key();
        self
    }

    /// Every token type: sessions, API keys, M2M and OAuth tokens (Clerk's
    /// `acceptsToken: 'any'`).
    pub fn accepts_any(mut self) -> Self {
        self.accepted = Accepted::ANY;
        self.warn_without_secret_key();
        self
    }

    fn warn_without_secret_key(&self) {
        if self.accepted.any_opaque() && self.core.machine.is_none() {
            tracing::warn!(
                "this layer accepts machine tokens, but no CLERK_SECRET_KEY is configured: \
                 opaque ones (ak_, mt_, oat_) will get 503 verification_unavailable"
            );
        }
    }
}

impl<S> Layer<S> for ClerkSyncLayer {
    type Service = ClerkSyncService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClerkSyncService {
            inner,
            core: self.core.clone(),
            mode: self.mode,
            accepted: self.accepted,
        }
    }
}

/// Verifies the token and makes sure the user row exists before calling the inner service,
/// which finds the [`crate::ClerkUser`] (or [`crate::ClerkMachine`]) in the request
/// extensions. Rejections are
/// responses (401/403/503 with a JSON body), never service errors.
#[derive(Debug, Clone)]
pub struct ClerkSyncService<S> {
    inner: S,
    core: Arc<Core>,
    mode: Mode,
    accepted: Accepted,
}

impl<S> ClerkSyncService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ClerkSyncService<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Known sessions, anonymous requests and rejections without I/O are decided here and
        // call the inner service directly: no boxed future, no clone of the inner service.
        let pending = match self
            .core
            .decide(request.headers(), self.mode, self.accepted)
        {
            Decision::Hit(caller) => {
                insert(&mut request, caller);
                return ResponseFuture::inner(self.inner.call(request));
            }
            Decision::Anonymous => {
                let anonymous = self.core.anonymous(&request);
                request.extensions_mut().insert(anonymous);
                return ResponseFuture::inner(self.inner.call(request));
            }
            Decision::Rejected(error) => {
                return ResponseFuture::ready(self.core.rejection(error));
            }
            Decision::Pending(pending) => pending,
        };
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        // See https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let core = self.core.clone();
        let mode = self.mode;
        let client = pending
            .needs_client()
            .then(|| self.core.client_network(&request))
            .flatten();
        ResponseFuture::boxed(async move {
            match core.finish(pending, mode, client).await {
                Ok(Some(caller)) => insert(&mut request, caller),
                Ok(None) => {
                    let anonymous = core.anonymous(&request);
                    request.extensions_mut().insert(anonymous);
                }
                Err(error) => return Ok(core.rejection(error)),
            }
            inner.call(request).await.map(IntoResponse::into_response)
        })
    }
}

pin_project! {
    /// Response future of [`ClerkSyncService`] and of the guard ([`crate::Require`]).
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: LayerState<F, E, ()>,
    }
}

impl<F, E> ResponseFuture<F, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            state: LayerState::inner(future, ()),
        }
    }

    pub(crate) fn ready(response: Response) -> Self {
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
        self.project().state.poll_with(cx, |_, ()| {})
    }
}
