//! The service: checks a request against the rules that match it, then answers or passes it on.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use ratelimit_core::{Decision, Limit, Verdict};

use crate::key::{KeyExtractor, RequestView};
use crate::layer::Shared;
use crate::metrics::RuleCounters;
use crate::observer::{DecisionEvent, Outcome, ResponseEvent};
use crate::response::{self, LimitState, Rejection};
use crate::rule::MissingKey;

/// The body of a rate-limited service's responses: the inner service's, or the layer's own
/// rejection.
pub type RateLimitBody<B> = Either<B, Full<Bytes>>;

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

/// An answer given before any store is asked.
enum Early {
    /// A blocked key: a rejection like a denial.
    Blocked(Rejection),
    /// A rule that rejects requests without a key, with its own status.
    NoKey {
        rule: String,
        status: http::StatusCode,
    },
}

/// One rule's part in a request.
struct Check {
    rule: usize,
    key: String,
    shadow: bool,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RateLimit<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let started = Instant::now();
            let method = request.method().clone();
            let route = request.uri().path().to_string();
            let grpc = is_grpc(&request);
            let (checks, client, early) = plan(&shared, &RequestView::of(&request), started);
            if let Some(early) = early {
                let response = match early {
                    Early::Blocked(rejection) => finish_rejection(&shared, rejection, grpc, &[]),
                    Early::NoKey { rule, status } => no_key_response(&rule, status),
                };
                notify_response(&shared, &method, &route, client, &response, started, true);
                return Ok(response);
            }

            let enforced: Vec<&Check> = checks.iter().filter(|c| !c.shadow).collect();
            let shadowed: Vec<&Check> = checks.iter().filter(|c| c.shadow).collect();
            let enforced_verdict = decide(&shared, &enforced).await;
            let shadow_verdict = decide(&shared, &shadowed).await;

            let at = Instant::now();
            report(
                &shared,
                &enforced,
                enforced_verdict.as_ref(),
                false,
                &method,
                &route,
                client,
                at,
            );
            report(
                &shared,
                &shadowed,
                shadow_verdict.as_ref(),
                true,
                &method,
                &route,
                client,
                at,
            );

            let states = limit_states(&shared, &enforced, enforced_verdict.as_ref());
            let denied = enforced_verdict.as_ref().is_some_and(|v| !v.is_allowed());
            if denied {
                let decision = enforced_verdict.as_ref().and_then(Verdict::decision);
                let rule = denying_rule(&shared, &enforced, enforced_verdict.as_ref());
                let rejection = Rejection {
                    rule,
                    retry_after: decision.map_or(Duration::from_secs(1), |d| d.retry_after()),
                    grpc,
                };
                let response = finish_rejection(&shared, rejection, grpc, &states);
                notify_response(&shared, &method, &route, client, &response, started, true);
                return Ok(response);
            }

            let mut response = inner.call(request).await?.map(Either::Left);
            if shared.headers.on_success {
                response::write_headers(response.headers_mut(), &shared.headers, &states);
            }
            notify_response(&shared, &method, &route, client, &response, started, false);
            Ok(response)
        })
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
    now: Instant,
) -> (Vec<Check>, Option<IpAddr>, Option<Early>) {
    let mut checks = Vec::new();
    let mut client = request.peer();
    for (index, rule) in shared.rules.iter().enumerate() {
        if !rule.matcher.matches(request) {
            continue;
        }
        let counters = counters(shared, index);
        let key = match rule.key.extract(request) {
            Ok(key) => {
                if let KeyExtractor::ClientIp(_) = rule.key {
                    client = key.parse().ok().or(client);
                }
                if let Some(wait) = shared.blocks.remaining(&key, now) {
                    RuleCounters::bump(&counters.blocked);
                    emit(
                        shared,
                        rule.name.as_ref(),
                        &key,
                        Outcome::Blocked,
                        rule.cost,
                        request,
                        client,
                        None,
                    );
                    let rejection = Rejection {
                        rule: rule.name.to_string(),
                        retry_after: wait,
                        grpc: false,
                    };
                    return (checks, client, Some(Early::Blocked(rejection)));
                }
                format!("{}:{key}", rule.name)
            }
            Err(error) => {
                RuleCounters::bump(&counters.no_key);
                tracing::debug!(rule = %rule.name, %error, "no rate-limit key");
                match rule.missing_key {
                    // A separator no extracted key produces, so the shared key never collides.
                    MissingKey::SharedBucket => format!("{}!missing", rule.name),
                    MissingKey::Skip => {
                        emit(
                            shared,
                            rule.name.as_ref(),
                            "",
                            Outcome::NoKey,
                            rule.cost,
                            request,
                            client,
                            None,
                        );
                        continue;
                    }
                    MissingKey::Reject(status) => {
                        tracing::debug!(rule = %rule.name, %status, "request without key rejected");
                        let early = Early::NoKey {
                            rule: rule.name.to_string(),
                            status,
                        };
                        return (checks, client, Some(early));
                    }
                }
            }
        };
        checks.push(Check {
            rule: index,
            key,
            shadow: rule.shadow || shared.shadow,
        });
    }
    (checks, client, None)
}

async fn decide(shared: &Shared, checks: &[&Check]) -> Option<Verdict> {
    if checks.is_empty() {
        return None;
    }
    let limits: Vec<Limit<'_>> = checks
        .iter()
        .filter_map(|c| {
            let rule = shared.rules.get(c.rule)?;
            Some(Limit::new(&c.key, rule.policy.load()).with_cost(rule.cost))
        })
        .collect();
    match shared.limiter.acquire(&limits).await {
        Ok(verdict) => Some(verdict),
        Err(error) => {
            // Only a policy changed at runtime below a rule's cost gets here (the builder and the
            // handle refuse that): deny, and say why.
            tracing::error!(%error, "rate-limit request refused");
            Some(Verdict::new(
                false,
                limits
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
                    .collect(),
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    shared: &Shared,
    checks: &[&Check],
    verdict: Option<&Verdict>,
    shadow: bool,
    method: &http::Method,
    route: &str,
    client: Option<IpAddr>,
    at: Instant,
) {
    let Some(verdict) = verdict else { return };
    for (check, decision) in checks.iter().zip(verdict.decisions()) {
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
        let event = DecisionEvent {
            rule: &rule.name,
            key: &check.key,
            outcome,
            cost: rule.cost,
            at,
            method,
            route,
            client,
            decision: Some(decision),
            degraded: verdict.degraded_by(),
        };
        for observer in &shared.observers {
            observer.on_decision(&event);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn emit(
    shared: &Shared,
    rule: &str,
    key: &str,
    outcome: Outcome,
    cost: u32,
    request: &RequestView<'_>,
    client: Option<IpAddr>,
    decision: Option<&Decision>,
) {
    let event = DecisionEvent {
        rule,
        key,
        outcome,
        cost,
        at: Instant::now(),
        method: request.method,
        route: request.uri.path(),
        client,
        decision,
        degraded: None,
    };
    for observer in &shared.observers {
        observer.on_decision(&event);
    }
}

fn limit_states<'a>(
    shared: &'a Shared,
    checks: &[&Check],
    verdict: Option<&Verdict>,
) -> Vec<LimitState<'a>> {
    let Some(verdict) = verdict else {
        return Vec::new();
    };
    checks
        .iter()
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

fn denying_rule(shared: &Shared, checks: &[&Check], verdict: Option<&Verdict>) -> String {
    let Some(verdict) = verdict else {
        return String::new();
    };
    checks
        .iter()
        .zip(verdict.decisions())
        .filter(|(_, d)| !d.is_allowed())
        .max_by_key(|(_, d)| d.retry_after())
        .and_then(|(c, _)| shared.rules.get(c.rule))
        .map(|r| r.name.to_string())
        .unwrap_or_default()
}

fn finish_rejection<B>(
    shared: &Shared,
    rejection: Rejection,
    grpc: bool,
    states: &[LimitState<'_>],
) -> Response<RateLimitBody<B>> {
    let rejection = Rejection { grpc, ..rejection };
    let mut response = match &shared.rejection {
        Some(custom) => custom(&rejection),
        None => response::reject(&rejection),
    };
    let seconds = response::ceil_secs(rejection.retry_after).max(1);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    if grpc {
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from(seconds));
    }
    response::write_headers(response.headers_mut(), &shared.headers, states);
    response.map(Either::Right)
}

fn no_key_response<B>(rule: &str, status: http::StatusCode) -> Response<RateLimitBody<B>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "no rate-limit key for rule {rule:?}\n"
    ))));
    *response.status_mut() = status;
    response.map(Either::Right)
}

fn notify_response<B>(
    shared: &Shared,
    method: &http::Method,
    route: &str,
    client: Option<IpAddr>,
    response: &Response<B>,
    started: Instant,
    limited: bool,
) {
    if shared.observers.is_empty() {
        return;
    }
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let event = ResponseEvent {
        method,
        route,
        client,
        status: response.status().as_u16(),
        grpc_status,
        latency: started.elapsed(),
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
