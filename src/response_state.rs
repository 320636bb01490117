//! The state behind the response futures of the crate's layers ([`crate::ClerkSyncService`],
//! [`crate::ratelimit::RateLimit`]): each decides most requests inside `Service::call` and
//! only boxes the ones that need I/O first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;

type BoxedResponse<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

pin_project! {
    /// `H` travels with the inner service's future and is handed to the layer's finishing
    /// step with its response (the rate limiter's headers; `()` for the sync layer).
    #[project = LayerStateProj]
    pub(crate) enum LayerState<F, E, H> {
        // The inner service's future.
        Inner { #[pin] future: F, extra: Option<H> },
        // An answer made without the inner service.
        Ready { response: Option<Response> },
        // I/O first (verification, sync, a store), then the inner service.
        Boxed { future: BoxedResponse<E> },
    }
}

impl<F, E, H> LayerState<F, E, H> {
    pub(crate) fn inner(future: F, extra: H) -> Self {
        Self::Inner {
            future,
            extra: Some(extra),
        }
    }

    pub(crate) fn ready(response: Response) -> Self {
        Self::Ready {
            response: Some(response),
        }
    }

    pub(crate) fn boxed(
        future: impl Future<Output = Result<Response, E>> + Send + 'static,
    ) -> Self {
        Self::Boxed {
            future: Box::pin(future),
        }
    }

    /// Polls the state; `finish` gets the inner service's response and `H` once.
    pub(crate) fn poll_with<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        finish: impl FnOnce(&mut Response, H),
    ) -> Poll<Result<Response, E>>
    where
        F: Future<Output = Result<R, E>>,
        R: IntoResponse,
    {
        match self.project() {
            LayerStateProj::Inner { future, extra } => {
                let mut response = ready!(future.poll(cx))?.into_response();
                if let Some(extra) = extra.take() {
                    finish(&mut response, extra);
                }
                Poll::Ready(Ok(response))
            }
            LayerStateProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            LayerStateProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
