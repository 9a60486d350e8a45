//! The service: checks a request against the rules that match it, then answers or passes it on.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;
use http::{Method, Request, Response, StatusCode};
use ratelimit_core::{Decision, Limit, Verdict};
use smallvec::SmallVec;

use crate::body::RejectionBody;
use crate::key::{KeyExtractor, RequestView};
use crate::layer::Shared;
use crate::metrics::RuleCounters;
use crate::observer::{DecisionEvent, Outcome, ResponseEvent};
use crate::response::{self, LimitState, Rejection};
use crate::rule::MissingKey;

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
        let grpc = is_grpc(&request);
        let facts = (!shared.observers.is_empty()).then(|| Facts {
            method: request.method().clone(),
            uri: request.uri().clone(),
            client,
            started: Instant::now(),
        });
        if let Some(early) = early {
            let response = match early {
                Early::Blocked(rejection) => reject(shared, rejection, grpc, &[]),
                Early::NoKey { rule, status } => no_key_response(&rule, status),
            };
            notify_response(shared, facts.as_ref(), &response, true);
            return ResponseFuture::ready(response);
        }
        // An in-process store decides right here: the request then costs no future of ours, only
        // the inner service's. A remote store is awaited in a boxed future.
        let (Some(verdict), Some(shadow_verdict)) = (
            decide_now(shared, &checks, false),
            decide_now(shared, &checks, true),
        ) else {
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(decide_then_call(
                shared.clone(),
                inner,
                request,
                checks,
                grpc,
                facts,
            ));
        };
        match conclude(
            shared,
            &checks,
            verdict,
            shadow_verdict,
            grpc,
            facts.as_ref(),
        ) {
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
    grpc: bool,
    facts: Option<Facts>,
) -> Result<Response<ResBody>, S::Error>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: RejectionBody,
{
    let verdict = decide(&shared, &checks, false).await;
    let shadow_verdict = decide(&shared, &checks, true).await;
    match conclude(
        &shared,
        &checks,
        verdict,
        shadow_verdict,
        grpc,
        facts.as_ref(),
    ) {
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

/// Reports the decisions; then either the rejection to send, or the header fields to add to the
/// inner service's response (when configured).
fn conclude<B: RejectionBody>(
    shared: &Shared,
    checks: &Checks,
    verdict: Option<Verdict>,
    shadow_verdict: Option<Verdict>,
    grpc: bool,
    facts: Option<&Facts>,
) -> Result<Option<http::HeaderMap>, Response<B>> {
    report(shared, checks, false, verdict.as_ref(), facts);
    report(shared, checks, true, shadow_verdict.as_ref(), facts);
    let Some(verdict) = verdict else {
        return Ok(None);
    };
    if !verdict.is_allowed() {
        let states = limit_states(shared, checks, &verdict);
        let rejection = Rejection {
            rule: denying_rule(shared, checks, &verdict),
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
        &limit_states(shared, checks, &verdict),
    );
    Ok(Some(headers))
}

/// What is left to do once the inner service answers.
pub(crate) struct After {
    shared: Option<Arc<Shared>>,
    headers: Option<http::HeaderMap>,
    facts: Option<Facts>,
}

pin_project_lite::pin_project! {
    /// The future of a [`RateLimit`] service's response.
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
    fn ready(response: Response<B>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    fn calling(future: F, after: Option<Box<After>>) -> Self {
        ResponseFuture {
            state: State::Calling { future, after },
        }
    }

    fn boxed(future: impl Future<Output = Result<Response<B>, E>> + Send + 'static) -> Self {
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

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The rules a request matches and the keys it goes under; or, when a key is blocked or a rule
/// rejects requests without a key, the answer to send at once.
fn plan(
    shared: &Shared,
    request: &RequestView<'_>,
    checks: &mut Checks,
) -> (Option<IpAddr>, Option<Early>) {
    // The client's address is looked up for observers only; a ClientIp rule refines it.
    let mut client = if shared.observers.is_empty() {
        None
    } else {
        request.peer()
    };
    for (index, rule) in shared.rules.iter().enumerate() {
        if !rule.matcher.matches(request) {
            continue;
        }
        let counters = counters(shared, index);
        // The store key is the rule's name, `|`, and the extracted key. Rule names cannot hold `|`
        // or `!` (the builder checks), so the first of them ends the name and no extracted key,
        // whatever a client puts in it, can reach another rule's buckets.
        let mut key = CompactString::with_capacity(rule.name.len() + 16);
        key.push_str(&rule.name);
        key.push('|');
        let prefix = key.len();
        match rule.key.extract_into(request, &mut key) {
            Ok(()) => {
                let extracted = key.get(prefix..).unwrap_or_default();
                if let KeyExtractor::ClientIp(_) = rule.key {
                    client = extracted.parse().ok().or(client);
                }
                if let Some(wait) = shared.blocks.remaining(extracted) {
                    RuleCounters::bump(&counters.blocked);
                    emit(
                        shared,
                        &rule.name,
                        extracted,
                        Outcome::Blocked,
                        rule.cost,
                        request,
                        client,
                    );
                    let rejection = Rejection {
                        rule: rule.name.to_string(),
                        retry_after: wait,
                        grpc: false,
                    };
                    return (client, Some(Early::Blocked(rejection)));
                }
            }
            Err(error) => {
                RuleCounters::bump(&counters.no_key);
                tracing::debug!(rule = %rule.name, %error, "no rate-limit key");
                match rule.missing_key {
                    MissingKey::SharedBucket => {
                        // `!` instead of `|`: no extracted key can produce this one.
                        key.truncate(prefix.saturating_sub(1));
                        key.push_str("!missing");
                    }
                    MissingKey::Skip => {
                        emit(
                            shared,
                            &rule.name,
                            "",
                            Outcome::NoKey,
                            rule.cost,
                            request,
                            client,
                        );
                        continue;
                    }
                    MissingKey::Reject(status) => {
                        let early = Early::NoKey {
                            rule: rule.name.to_string(),
                            status,
                        };
                        return (client, Some(early));
                    }
                }
            }
        }
        checks.push(Check {
            rule: index,
            key,
            shadow: rule.shadow || shared.shadow,
        });
    }
    (client, None)
}

/// The limits of the enforced (or the shadow) checks.
fn limits<'a>(shared: &Shared, checks: &'a Checks, shadow: bool) -> SmallVec<[Limit<'a>; 4]> {
    checks
        .iter()
        .filter(|c| c.shadow == shadow)
        .filter_map(|c| {
            let rule = shared.rules.get(c.rule)?;
            Some(Limit::new(&c.key, rule.policy.load()).with_cost(rule.cost))
        })
        .collect()
}

/// Decides the enforced (or shadow) checks now, when the store answers in this process:
/// `Some(None)` when there are no such checks, `None` when the store must be asked asynchronously.
fn decide_now(shared: &Shared, checks: &Checks, shadow: bool) -> Option<Option<Verdict>> {
    if !checks.iter().any(|c| c.shadow == shadow) {
        return Some(None);
    }
    let limits = limits(shared, checks, shadow);
    if limits.is_empty() {
        return Some(None);
    }
    let answer = shared.limiter.acquire_sync(&limits)?;
    Some(Some(settle(&limits, answer)))
}

/// Decides the enforced (or shadow) checks in one all-or-nothing store call; `None` when there are
/// none.
async fn decide(shared: &Shared, checks: &Checks, shadow: bool) -> Option<Verdict> {
    let limits = limits(shared, checks, shadow);
    if limits.is_empty() {
        return None;
    }
    let answer = shared.limiter.acquire(&limits).await;
    Some(settle(&limits, answer))
}

fn settle(limits: &[Limit<'_>], answer: Result<Verdict, ratelimit_core::RequestError>) -> Verdict {
    match answer {
        Ok(verdict) => verdict,
        Err(error) => {
            // The builder and the handle refuse policies that cannot hold a rule's cost, so this
            // means a misconfiguration they could not see: deny, and say why.
            tracing::error!(%error, "rate-limit request refused");
            let decisions = limits
                .iter()
                .map(|l| {
                    Decision::new(
                        false,
                        l.policy.burst(),
                        0,
                        Duration::from_secs(1),
                        Duration::ZERO,
                    )
                })
                .collect();
            Verdict::new(false, decisions)
        }
    }
}

/// Counts, logs and reports each decision of the enforced (or shadow) checks.
fn report(
    shared: &Shared,
    checks: &Checks,
    shadow: bool,
    verdict: Option<&Verdict>,
    facts: Option<&Facts>,
) {
    let Some(verdict) = verdict else { return };
    let at = facts.map(|_| Instant::now());
    let decided = checks.iter().filter(|c| c.shadow == shadow);
    for (check, decision) in decided.zip(verdict.decisions()) {
        let Some(rule) = shared.rules.get(check.rule) else {
            continue;
        };
        let counters = counters(shared, check.rule);
        let outcome = match (verdict.is_allowed(), shadow) {
            (true, _) => Outcome::Admitted,
            (false, true) => Outcome::ShadowLimited,
            (false, false) => Outcome::Limited,
        };
        match outcome {
            Outcome::Admitted => {
                RuleCounters::bump(&counters.admitted);
                if u64::from(decision.remaining()) * 10 < u64::from(decision.limit()) {
                    RuleCounters::bump(&counters.near_limit);
                }
            }
            Outcome::ShadowLimited => {
                RuleCounters::bump(&counters.shadow_limited);
                tracing::info!(rule = %rule.name, key = %check.key, "shadow: would have limited");
            }
            _ => {
                RuleCounters::bump(&counters.limited);
                tracing::debug!(rule = %rule.name, key = %check.key, "limited");
            }
        }
        if let Some(failure) = verdict.degraded_by() {
            RuleCounters::bump(&counters.store_errors);
            tracing::warn!(rule = %rule.name, ?failure, "store failed; failure policy decided");
        }
        let (Some(facts), Some(at)) = (facts, at) else {
            continue;
        };
        let event = DecisionEvent {
            rule: &rule.name,
            // The extracted key, as blocked decisions report it and `RateLimitHandle::block` takes
            // it: the store key without the rule's name and separator.
            key: check.key.get(rule.name.len() + 1..).unwrap_or(&check.key),
            outcome,
            cost: rule.cost,
            at,
            method: &facts.method,
            route: facts.uri.path(),
            client: facts.client,
            decision: Some(decision),
            degraded: verdict.degraded_by(),
        };
        for observer in &shared.observers {
            observer.on_decision(&event);
        }
    }
}

/// Reports a decision made without the store (a blocked key, a request without a key).
fn emit(
    shared: &Shared,
    rule: &str,
    key: &str,
    outcome: Outcome,
    cost: u32,
    request: &RequestView<'_>,
    client: Option<IpAddr>,
) {
    if shared.observers.is_empty() {
        return;
    }
    let event = DecisionEvent {
        rule,
        key,
        outcome,
        cost,
        at: Instant::now(),
        method: request.method,
        route: request.uri.path(),
        client,
        decision: None,
        degraded: None,
    };
    for observer in &shared.observers {
        observer.on_decision(&event);
    }
}

/// Each enforced limit's state, for the response header fields.
fn limit_states<'a>(shared: &'a Shared, checks: &Checks, verdict: &Verdict) -> Vec<LimitState<'a>> {
    checks
        .iter()
        .filter(|c| !c.shadow)
        .zip(verdict.decisions())
        .filter_map(|(check, decision)| {
            let rule = shared.rules.get(check.rule)?;
            Some(LimitState {
                rule: &rule.name,
                policy: rule.policy.load(),
                decision: *decision,
            })
        })
        .collect()
}

/// The name of the rule that denied and asks for the longest wait.
fn denying_rule(shared: &Shared, checks: &Checks, verdict: &Verdict) -> String {
    checks
        .iter()
        .filter(|c| !c.shadow)
        .zip(verdict.decisions())
        .filter(|(_, d)| !d.is_allowed())
        .max_by_key(|(_, d)| d.retry_after())
        .and_then(|(c, _)| shared.rules.get(c.rule))
        .map(|r| r.name.to_string())
        .unwrap_or_default()
}

fn reject<B: RejectionBody>(
    shared: &Shared,
    rejection: Rejection,
    grpc: bool,
    states: &[LimitState<'_>],
) -> Response<B> {
    let rejection = Rejection { grpc, ..rejection };
    let mut response = match &shared.rejection {
        Some(custom) => custom(&rejection),
        None => response::reject(&rejection),
    };
    let seconds = response::ceil_secs(rejection.retry_after).max(1);
    let headers = response.headers_mut();
    headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    if grpc {
        // gRPC clients read metadata, where header names are lowercase.
        headers.insert("retry-after", http::HeaderValue::from(seconds));
    }
    response::write_headers(headers, &shared.headers, states);
    response.map(B::from_bytes)
}

fn no_key_response<B: RejectionBody>(rule: &str, status: StatusCode) -> Response<B> {
    let mut response = Response::new(B::from_bytes(Bytes::from(format!(
        "no rate-limit key for rule {rule:?}\n"
    ))));
    *response.status_mut() = status;
    response
}

fn notify_response<B>(
    shared: &Shared,
    facts: Option<&Facts>,
    response: &Response<B>,
    limited: bool,
) {
    let Some(facts) = facts else { return };
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let event = ResponseEvent {
        method: &facts.method,
        route: facts.uri.path(),
        client: facts.client,
        status: response.status().as_u16(),
        grpc_status,
        latency: facts.started.elapsed(),
        limited,
    };
    for observer in &shared.observers {
        observer.on_response(&event);
    }
}

fn counters(shared: &Shared, index: usize) -> &RuleCounters {
    static NONE: std::sync::OnceLock<RuleCounters> = std::sync::OnceLock::new();
    shared
        .counters
        .get(index)
        .unwrap_or_else(|| NONE.get_or_init(RuleCounters::default))
}
