//! The service's own tallies of its answers, kept beside the recorder.
//!
//! Apart because they must work with no recorder installed: the status page and library users
//! read them directly.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::counter;

use super::{REFUSED, REQUESTS, SHADOW_OVER_LIMIT, SHOULD_RATE_LIMIT_ERROR};

/// What the service has answered: each answer goes to the recorder ([`metrics`]) and is tallied
/// here as well, for the status page and for callers that have no recorder.
#[derive(Debug, Default)]
pub struct Metrics {
    // Relaxed: independent counters, read for display only.
    ok: AtomicU64,
    over_limit: AtomicU64,
    shadow_over_limit: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
}

impl Metrics {
    /// One request answered: over limit or not.
    pub fn answered(&self, over: bool) {
        let (tally, code) = if over {
            (&self.over_limit, "over_limit")
        } else {
            (&self.ok, "ok")
        };
        tally.fetch_add(1, Ordering::Relaxed);
        counter!(REQUESTS, "code" => code).increment(1);
    }

    /// One request answered with an error status: envoyproxy/ratelimit's `service_error`, the
    /// type of a request it cannot decide.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        counter!(REQUESTS, "code" => "error").increment(1);
        counter!(SHOULD_RATE_LIMIT_ERROR, "err_type" => "service_error").increment(1);
    }

    /// One request with a descriptor in shadow or quota mode over its limit.
    pub fn shadow_over_limit(&self) {
        self.shadow_over_limit.fetch_add(1, Ordering::Relaxed);
        counter!(SHADOW_OVER_LIMIT).increment(1);
    }

    /// One store call the limiter refused as invalid.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        counter!(REFUSED).increment(1);
    }

    /// Requests answered `OK`.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests answered `OVER_LIMIT`.
    pub fn over_limit(&self) -> u64 {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// Requests answered with an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Requests with a shadow or quota-mode descriptor over its limit.
    pub fn shadow_over_limits(&self) -> u64 {
        self.shadow_over_limit.load(Ordering::Relaxed)
    }

    /// Store calls the limiter refused as invalid.
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The tallies for people (a log line, a terminal), one `name value` a line; the status
    /// page reads the counts one by one, and `/metrics` is the recorder's ([`render`](super::render)).
    pub fn render(&self) -> String {
        format!(
            "ok {}\nover_limit {}\nerror {}\nshadow_over_limit {}\nrefused {}\n",
            self.ok(),
            self.over_limit(),
            self.errors(),
            self.shadow_over_limits(),
            self.refusals(),
        )
    }
}
