//! The service: checks a request against the rules that match it, then answers or passes it on.
//!
//! Split as tower's own middleware are: this file holds the [`RateLimit`] service and the order of
//! a call; its response future (`future.rs`), the planning and deciding of a request's checks
//! (`decide.rs`), the counting and reporting of decisions to observers (`report.rs`) and the
//! rendering of the responses the layer answers itself (`render.rs`) sit beside it.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use http::{Method, Request, Response, StatusCode};
use ratelimit_core::Verdict;
use smallvec::SmallVec;
use tracing::Instrument;

use crate::body::RejectionBody;
use crate::key::RequestView;
use crate::response::{self, Rejection};
use crate::shared::Shared;

mod decide;
mod future;
mod render;
mod report;

use decide::{decide, decide_now, plan};
use future::After;
pub use future::ResponseFuture;
use render::{denying_rule, limit_states, no_key_response, reject};
use report::{notify_response, report};

/// A service wrapped by a [`RateLimitLayer`](crate::RateLimitLayer).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        RateLimit { inner, shared }
    }
}

/// One matching rule's part in a request.
struct Check {
    rule: usize,
    // Inline up to 24 bytes (every IPv4 key with a short rule name): no allocation per request.
    key: CompactString,
    shadow: bool,
}

/// The rules a request matched; inline for the usual few, so planning allocates only the keys.
type Checks = SmallVec<[Check; 4]>;

/// An answer given before any store is asked.
enum Early {
    /// A blocked key: answered like a denial.
    Blocked(Rejection),
    /// A rule that rejects requests without a key, with its own status.
    NoKey { rule: String, status: StatusCode },
}

/// What observers are told about a request; gathered only when there are observers.
struct Facts {
    method: Method,
    // A clone of the URI shares its bytes (a reference count), where the path as a String would
    // allocate on every observed request.
    uri: http::Uri,
    client: Option<IpAddr>,
    started: Instant,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RateLimit<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: RejectionBody + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let mut checks = Checks::new();
        let (client, early) = plan(shared, &RequestView::of(&request), &mut checks);
        if checks.is_empty() && early.is_none() && shared.observers.is_empty() {
            // No rule applies: the inner service's future, untouched but for one word.
            return ResponseFuture::calling(self.inner.call(request), None);
        }
        let facts = (!shared.observers.is_empty()).then(|| Facts {
            method: request.method().clone(),
            uri: request.uri().clone(),
            client,
            started: Instant::now(),
        });
        if let Some(early) = early {
            let response = match early {
                Early::Blocked(rejection) => reject(shared, rejection, is_grpc(&request), &[]),
                Early::NoKey { rule, status } => no_key_response(&rule, status),
            };
            notify_response(shared, facts.as_ref(), &response, true);
            return ResponseFuture::ready(response);
        }
        // The request's span around its store call and decisions (one child span per rule, see
        // report.rs), only for a subscriber that wants it: even a disabled span costs its
        // enter, exit and drop on every request.
        let span = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| tracing::debug_span!("ratelimit.request", rules = checks.len()));
        let entered = span.as_ref().map(tracing::Span::enter);
        // An in-process store decides right here: the request then costs no future of ours, only
        // the inner service's. A remote store is awaited in a boxed future.
        let (Some(verdict), Some(shadow_verdict)) = (
            decide_now(shared, &checks, false),
            decide_now(shared, &checks, true),
        ) else {
            drop(entered);
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(decide_then_call(
                shared.clone(),
                inner,
                request,
                checks,
                facts,
                span.clone().unwrap_or_else(tracing::Span::none),
            ));
        };
        let concluded = conclude(
            shared,
            &checks,
            (verdict.as_ref(), shadow_verdict.as_ref()),
            || is_grpc(&request),
            facts.as_ref(),
            span.is_some(),
        );
        drop(entered);
        match concluded {
            Err(rejection) => {
                notify_response(shared, facts.as_ref(), &rejection, true);
                ResponseFuture::ready(rejection)
            }
            Ok(headers) => {
                // Boxed, and only when there is something to do: the common case adds one word
                // to the inner service's future.
                let after = (headers.is_some() || facts.is_some()).then(|| {
                    Box::new(After {
                        shared: facts.is_some().then(|| shared.clone()),
                        headers,
                        facts,
                    })
                });
                ResponseFuture::calling(self.inner.call(request), after)
            }
        }
    }
}

/// The slow path, for a store that must be asked over the network.
async fn decide_then_call<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqBody>,
    checks: Checks,
    facts: Option<Facts>,
    span: tracing::Span,
) -> Result<Response<ResBody>, S::Error>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: RejectionBody,
{
    // Read before the store is awaited: the request's body need not be `Sync`.
    let grpc = is_grpc(&request);
    let concluded = async {
        let verdict = decide(&shared, &checks, false).await;
        let shadow_verdict = decide(&shared, &checks, true).await;
        // Entered only between polls of the store's future (Instrument), and again here, so
        // the span never stays entered across an await.
        span.in_scope(|| {
            conclude(
                &shared,
                &checks,
                (verdict.as_ref(), shadow_verdict.as_ref()),
                || grpc,
                facts.as_ref(),
                !span.is_none(),
            )
        })
    }
    .instrument(span.clone())
    .await;
    match concluded {
        Err(rejection) => {
            notify_response(&shared, facts.as_ref(), &rejection, true);
            Ok(rejection)
        }
        Ok(headers) => {
            let mut response = inner.call(request).await?;
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            notify_response(&shared, facts.as_ref(), &response, false);
            Ok(response)
        }
    }
}

/// Reports the decisions (the enforced and the shadow checks' verdicts, each in a span of its own
/// when the request is `traced`); then either the rejection to send (in gRPC's terms when `grpc`
/// says so, asked only then), or the header fields to add to the inner service's response (when
/// configured).
fn conclude<B: RejectionBody>(
    shared: &Shared,
    checks: &Checks,
    (verdict, shadow_verdict): (Option<&Verdict>, Option<&Verdict>),
    grpc: impl FnOnce() -> bool,
    facts: Option<&Facts>,
    traced: bool,
) -> Result<Option<http::HeaderMap>, Response<B>> {
    report(shared, checks, false, verdict, facts, traced);
    report(shared, checks, true, shadow_verdict, facts, traced);
    let Some(verdict) = verdict else {
        return Ok(None);
    };
    if !verdict.is_allowed() {
        let grpc = grpc();
        let states = limit_states(shared, checks, verdict);
        let rejection = Rejection {
            rule: denying_rule(shared, checks, verdict),
            retry_after: verdict
                .decision()
                .map_or(Duration::from_secs(1), |d| d.retry_after()),
            grpc,
        };
        return Err(reject(shared, rejection, grpc, &states));
    }
    if !shared.headers.on_success {
        return Ok(None);
    }
    let mut headers = http::HeaderMap::new();
    response::write_headers(
        &mut headers,
        &shared.headers,
        &limit_states(shared, checks, verdict),
    );
    Ok(Some(headers))
}

/// Whether the request is gRPC, whose rejections are answered in gRPC's own terms.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
