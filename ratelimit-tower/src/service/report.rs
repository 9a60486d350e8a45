//! Counting and reporting: each rule's counters, the log lines, and the observers' events.
//!
//! Apart from the service so that what observers are told, and when, reads in one place: the same
//! events come from the fast path, the remote path and the answers given before any store is asked.

use std::net::IpAddr;
use std::time::Instant;

use http::Response;
use ratelimit_core::Verdict;

use super::{Checks, Facts};
use crate::key::RequestView;
use crate::metrics::RuleCounters;
use crate::observer::{DecisionEvent, Outcome, ResponseEvent};
use crate::shared::Shared;

/// Counts, logs and reports each decision of the enforced (or shadow) checks; `traced` says whether
/// the request has a span, and so whether each decision gets one (asked once per request: with
/// tracing's `log` fallback, each `enabled!` costs a call into the logger).
pub(super) fn report(
    shared: &Shared,
    checks: &Checks,
    shadow: bool,
    verdict: Option<&Verdict>,
    facts: Option<&Facts>,
    traced: bool,
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
        // One span per rule's decision, inside the request's `ratelimit.request` span, only for a
        // tracing subscriber that wants it: tracing's `log` fallback would otherwise evaluate the
        // fields (the key's hash) on every request of a process without one. The key is hashed:
        // traces leave the process, client addresses should not.
        let _decision = traced.then(|| {
            tracing::debug_span!(
                "ratelimit.decision",
                rule = %rule.name,
                key_hash = key_hash(&check.key),
                outcome = ?outcome,
                remaining = decision.remaining(),
                shadow,
            )
            .entered()
        });
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

/// A stable hash of a store key, for telling keys apart in traces without writing them there:
/// the same key hashes alike in every replica and run. Not a secret (an address can be guessed
/// back by trying them all); a handle for grouping.
fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same in every process built by the same compiler.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Reports a decision made without the store (a blocked key, a request without a key).
pub(super) fn emit(
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

/// Tells the observers about the response sent, when there are observers (`facts`).
pub(super) fn notify_response<B>(
    shared: &Shared,
    facts: Option<&Facts>,
    response: &Response<B>,
    limited: bool,
) {
    let Some(facts) = facts else { return };
    // A static name: looking a header up by `&str` parses the name on every response.
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    let grpc_status = response
        .headers()
        .get(&GRPC_STATUS)
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

/// A rule's counters; a rule index out of range (never, the builder makes one per rule) counts
/// into a spare set rather than panicking on the request's path.
pub(super) fn counters(shared: &Shared, index: usize) -> &RuleCounters {
    static NONE: std::sync::OnceLock<RuleCounters> = std::sync::OnceLock::new();
    shared
        .counters
        .get(index)
        .unwrap_or_else(|| NONE.get_or_init(RuleCounters::default))
}
