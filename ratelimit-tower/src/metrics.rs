//! Counters per rule, readable at any time and rendered in the Prometheus text format.

use std::fmt::Write as _;
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

/// Renders `(rule, counters)` pairs as Prometheus text exposition format.
pub(crate) fn render<'a>(rules: impl Iterator<Item = (&'a str, &'a RuleCounters)>) -> String {
    let mut out = String::from(
        "# HELP ratelimit_decisions_total Rate-limit decisions by rule and outcome.\n\
         # TYPE ratelimit_decisions_total counter\n",
    );
    for (rule, counters) in rules {
        for (outcome, count) in counters.snapshot() {
            // Rule names are checked to be label-safe when the layer is built.
            let _ = writeln!(
                out,
                "ratelimit_decisions_total{{rule=\"{rule}\",outcome=\"{outcome}\"}} {count}"
            );
        }
    }
    out
}
