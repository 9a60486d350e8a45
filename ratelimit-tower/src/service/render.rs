//! The responses the layer sends itself: a rejection with its header fields, or the answer to a
//! request without a key.
//!
//! Apart from the service because a custom rejection, `Retry-After` and the rate-limit header
//! fields must be put together the same way however the decision was reached.

use bytes::Bytes;
use http::{Response, StatusCode};
use ratelimit_core::Verdict;

use super::Checks;
use crate::body::RejectionBody;
use crate::response::{self, LimitState, Rejection};
use crate::shared::Shared;

/// Each enforced limit's state, for the response header fields.
pub(super) fn limit_states<'a>(
    shared: &'a Shared,
    checks: &Checks,
    verdict: &Verdict,
) -> Vec<LimitState<'a>> {
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
pub(super) fn denying_rule(shared: &Shared, checks: &Checks, verdict: &Verdict) -> String {
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

/// The rejection sent for a denial: the custom response if there is one, with `Retry-After` and
/// the rate-limit header fields added.
pub(super) fn reject<B: RejectionBody>(
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

/// The answer to a request without a key under a rule that rejects those, with its status.
pub(super) fn no_key_response<B: RejectionBody>(rule: &str, status: StatusCode) -> Response<B> {
    let mut response = Response::new(B::from_bytes(Bytes::from(format!(
        "no rate-limit key for rule {rule:?}\n"
    ))));
    *response.status_mut() = status;
    response
}
