//! The future of a [`RateLimit`](super::RateLimit) service's response.
//!
//! Apart from the service because its three states (answered at once, calling the inner service,
//! deciding on a remote store first) are what keeps the common case to the inner future plus one
//! word, and that layout is easier to keep small when it is read on its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;

use super::Facts;
use super::report::notify_response;
use crate::shared::Shared;

/// What is left to do once the inner service answers.
pub(super) struct After {
    pub(super) shared: Option<Arc<Shared>>,
    pub(super) headers: Option<http::HeaderMap>,
    pub(super) facts: Option<Facts>,
}

pin_project_lite::pin_project! {
    /// The future of a [`RateLimit`](super::RateLimit) service's response.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F, B, E> {
        // Rejected without calling the inner service.
        Ready { response: Option<Response<B>> },
        // Admitted: the inner service's own future, and what to do when it answers.
        Calling { #[pin] future: F, after: Option<Box<After>> },
        // Deciding on a remote store first.
        Boxed { future: Boxed<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(super) fn ready(response: Response<B>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    pub(super) fn calling(future: F, after: Option<Box<After>>) -> Self {
        ResponseFuture {
            state: State::Calling { future, after },
        }
    }

    pub(super) fn boxed(
        future: impl Future<Output = Result<Response<B>, E>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            state: State::Boxed {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: a caller bug; stay pending rather than panic.
                None => Poll::Pending,
            },
            StateProjection::Calling { future, after } => {
                let response = match future.poll(cx) {
                    Poll::Ready(Ok(response)) => response,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                };
                let mut response = response;
                if let Some(after) = after.take() {
                    let after = *after;
                    if let Some(headers) = after.headers {
                        response.headers_mut().extend(headers);
                    }
                    if let Some(shared) = after.shared {
                        notify_response(&shared, after.facts.as_ref(), &response, false);
                    }
                }
                Poll::Ready(Ok(response))
            }
            StateProjection::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
