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
use tower_layer::Layer;
use tower_service::Service;

use crate::handle::ClerkSync;

/// Whether requests without a token pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Required,
    Optional,
}

/// Put in the extensions of requests that passed the optional layer without a token, so the
/// rate limiter can tell "anonymous" from "the sync layer did not run".
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnonymousRequest;

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
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        // See https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let clerk = self.clerk.clone();
        let mode = self.mode;
        ResponseFuture {
            inner: Box::pin(async move {
                match clerk.authenticate(request.headers(), mode).await {
                    Ok(Some(user)) => {
                        request.extensions_mut().insert(user);
                    }
                    Ok(None) => {
                        request.extensions_mut().insert(AnonymousRequest);
                    }
                    Err(rejection) => return Ok(rejection.into_response()),
                }
                inner.call(request).await.map(IntoResponse::into_response)
            }),
        }
    }
}

/// Response future of [`ClerkSyncService`].
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>,
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
