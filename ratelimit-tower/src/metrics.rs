//! Counters per rule, readable at any time and exported through the `metrics` facade.
//!
//! The hot path bumps plain atomics; an exporter reads them when it is scraped
//! ([`RateLimitHandle::record_metrics`](crate::RateLimitHandle::record_metrics)), so a request
//! never pays for a recorder, and a layer built before the recorder was installed still exports.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rule's counters. Relaxed atomics: each is an independent tally, read for reporting only.
#[derive(Debug, Default)]
pub struct RuleCounters {
    /// Requests the rule admitted.
    pub admitted: AtomicU64,
    /// Requests the rule denied.
    pub limited: AtomicU64,
    /// Requests the rule would have denied in shadow mode.
    pub shadow_limited: AtomicU64,
    /// Decisions made by the failure policy because the store failed.
    pub store_errors: AtomicU64,
    /// Admitted requests that left less than a tenth of the limit.
    pub near_limit: AtomicU64,
    /// Requests whose key could not be extracted.
    pub no_key: AtomicU64,
    /// Requests denied because their key is blocked.
    pub blocked: AtomicU64,
}

impl RuleCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as `(outcome, count)` pairs.
    pub fn snapshot(&self) -> [(&'static str, u64); 7] {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("admitted", read(&self.admitted)),
            ("limited", read(&self.limited)),
            ("shadow_limited", read(&self.shadow_limited)),
            ("store_error", read(&self.store_errors)),
            ("near_limit", read(&self.near_limit)),
            ("no_key", read(&self.no_key)),
            ("blocked", read(&self.blocked)),
        ]
    }
}

/// The counter every rule's decisions are exported as, labelled `rule` and `outcome`.
pub const DECISIONS_METRIC: &str = "ratelimit_decisions_total";

/// Writes `(rule, counters)` pairs into the current `metrics` recorder as absolute values.
pub(crate) fn record<'a>(rules: impl Iterator<Item = (&'a str, &'a RuleCounters)>) {
    ::metrics::describe_counter!(
        DECISIONS_METRIC,
        "Rate-limit decisions by rule and outcome."
    );
    for (rule, counters) in rules {
        for (outcome, count) in counters.snapshot() {
            // Rule names are checked to be label-safe when the layer is built.
            ::metrics::counter!(DECISIONS_METRIC, "rule" => rule.to_string(), "outcome" => outcome)
                .absolute(count);
        }
    }
}
