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

use crate::handle::{ClerkSync, Quick};
use crate::response::LayerState;

/// Whether requests without a token pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Required,
    Optional,
}

/// Put in the extensions of requests that passed the optional layer without a token, so the
/// rate limiter can tell "anonymous" from "the sync layer did not run". `network` is the
/// client's network by [`crate::ClientAddress`], when the server provides `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnonymousRequest {
    pub(crate) network: Option<std::net::IpAddr>,
}

/// Applies [`ClerkSyncService`]; made by [`ClerkSync::layer`] or [`ClerkSync::optional_layer`].
#[derive(Debug, Clone)]
pub struct ClerkSyncLayer {
    clerk: ClerkSync,
    mode: Mode,
}

impl ClerkSyncLayer {
    pub(crate) fn new(clerk: ClerkSync, mode: Mode) -> Self {
        Self { clerk, mode }
    }
}

impl<S> Layer<S> for ClerkSyncLayer {
    type Service = ClerkSyncService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClerkSyncService {
            inner,
            clerk: self.clerk.clone(),
            mode: self.mode,
        }
    }
}

/// Verifies the session token and makes sure the user row exists before calling the inner
/// service, which finds the [`crate::ClerkUser`] in the request extensions. Rejections are
/// responses (401/403/503 with a JSON body), never service errors.
#[derive(Debug, Clone)]
pub struct ClerkSyncService<S> {
    inner: S,
    clerk: ClerkSync,
    mode: Mode,
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
        match self.clerk.authenticate_quick(request.headers(), self.mode) {
            Quick::Hit(user) => {
                request.extensions_mut().insert(user);
                return ResponseFuture::inner(self.inner.call(request));
            }
            Quick::Anonymous => {
                let anonymous = self.clerk.anonymous(&request);
                request.extensions_mut().insert(anonymous);
                return ResponseFuture::inner(self.inner.call(request));
            }
            Quick::Rejected(rejection) => return ResponseFuture::ready(rejection.into_response()),
            Quick::Miss => {}
        }
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        // See https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let clerk = self.clerk.clone();
        let mode = self.mode;
        ResponseFuture::boxed(async move {
            match clerk.authenticate(request.headers(), mode).await {
                Ok(Some(user)) => {
                    request.extensions_mut().insert(user);
                }
                Ok(None) => {
                    let anonymous = clerk.anonymous(&request);
                    request.extensions_mut().insert(anonymous);
                }
                Err(rejection) => return Ok(rejection.into_response()),
            }
            inner.call(request).await.map(IntoResponse::into_response)
        })
    }
}

pin_project! {
    /// Response future of [`ClerkSyncService`].
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: LayerState<F, E, ()>,
    }
}

impl<F, E> ResponseFuture<F, E> {
    fn inner(future: F) -> Self {
        Self {
            state: LayerState::inner(future, ()),
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
        self.project().state.poll_with(cx, |_, ()| {})
    }
}
