//! Which rules a request matches, under which keys, and the store's verdict on them.
//!
//! Apart from the service because this is where a request becomes limits: the store key's format
//! (rule name, separator, extracted key) and the in-process fast path are decided here and nowhere
//! else.

use std::net::IpAddr;
use std::time::Duration;

use ratelimit_core::{Decision, Limit, Verdict};
use smallvec::SmallVec;

use super::report::{counters, emit};
use super::{Check, Checks, Early};
use crate::key::{KeyExtractor, RequestView};
use crate::metrics::RuleCounters;
use crate::observer::Outcome;
use crate::response::Rejection;
use crate::rule::MissingKey;
use crate::shared::Shared;

/// The rules a request matches and the keys it goes under; or, when a key is blocked or a rule
/// rejects requests without a key, the answer to send at once.
pub(super) fn plan(
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
        let mut key = rule.key_prefix.clone();
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

/// A check's limit: its key under its rule's policy and cost now.
fn limit<'a>(shared: &Shared, check: &'a Check) -> Option<Limit<'a>> {
    let rule = shared.rules.get(check.rule)?;
    Some(Limit::new(&check.key, rule.policy.load()).with_cost(rule.cost))
}

/// The limits of the enforced (or the shadow) checks, in the checks' order.
fn limits<'a>(shared: &Shared, checks: &'a Checks, shadow: bool) -> SmallVec<[Limit<'a>; 4]> {
    checks
        .iter()
        .filter(|c| c.shadow == shadow)
        .filter_map(|c| limit(shared, c))
        .collect()
}

/// Decides the enforced (or shadow) checks now, when the store answers in this process:
/// `Some(None)` when there are no such checks, `None` when the store must be asked asynchronously.
pub(super) fn decide_now(
    shared: &Shared,
    checks: &Checks,
    shadow: bool,
) -> Option<Option<Verdict>> {
    // A request that matched one rule, the usual case, has its one limit on the stack: collecting
    // it into a vector of limits cost more than the limit itself.
    if let [check] = checks.as_slice() {
        let Some(limit) = (check.shadow == shadow)
            .then(|| limit(shared, check))
            .flatten()
        else {
            return Some(None);
        };
        let limits = [limit];
        let answer = shared.limiter.acquire_sync(&limits)?;
        return Some(Some(settle(&limits, answer)));
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
pub(super) async fn decide(shared: &Shared, checks: &Checks, shadow: bool) -> Option<Verdict> {
    let limits = limits(shared, checks, shadow);
    if limits.is_empty() {
        return None;
    }
    let answer = shared.limiter.acquire(&limits).await;
    Some(settle(&limits, answer))
}

/// The verdict to act on: the store's, or a denial of every limit when the request was refused.
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
