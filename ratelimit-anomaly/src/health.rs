//! How the backend answered each cohort: responses, server errors and a latency histogram, kept
//! apart per [`Standing`] so that the controller's health gate can judge the backend on the
//! clients it protects. An attacker's own slow or failing requests (an expensive endpoint, a
//! malformed payload) land in the attacker's cohort and cannot make the backend look unhealthy to
//! the gate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::monitor::Standing;

/// Latency buckets: bucket `i` holds latencies below 2^i µs (the last one everything above).
pub(crate) const LATENCY_BUCKETS: usize = 32;

/// A latency histogram in powers of two of microseconds: fixed memory, mergeable by addition.
pub(crate) type Histogram = [u64; LATENCY_BUCKETS];

/// The bucket a latency falls in.
pub(crate) fn latency_bucket(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1)
}

/// Takes the counts out of `buckets`, leaving zeros.
pub(crate) fn drain(buckets: &[AtomicU64; LATENCY_BUCKETS]) -> Histogram {
    let mut out = [0u64; LATENCY_BUCKETS];
    for (bucket, counter) in out.iter_mut().zip(buckets) {
        // Relaxed: a statistic read once a tick; a count landing in the next tick is fine.
        *bucket = counter.swap(0, Ordering::Relaxed);
    }
    out
}

/// The `q` quantile of `buckets`, as the upper edge of its bucket.
pub(crate) fn percentile(buckets: &Histogram, q: f64) -> Duration {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (bucket, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            // The bucket's upper edge: 2^bucket µs.
            return Duration::from_micros(1u64 << bucket.min(40));
        }
    }
    Duration::ZERO
}

/// What one cohort's responses looked like in a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CohortHealth {
    /// Responses (429s excluded: a refusal says nothing about the backend).
    pub responses: u64,
    /// Of those, responses with a 5xx status.
    pub server_errors: u64,
    latency: Histogram,
}

impl CohortHealth {
    /// `responses` responses, `server_errors` of them 5xx, all taking `latency`: for tests and
    /// simulations that build a tick's statistics by hand.
    pub fn uniform(responses: u64, server_errors: u64, latency: Duration) -> Self {
        let mut health = CohortHealth {
            responses,
            server_errors,
            latency: [0; LATENCY_BUCKETS],
        };
        health.latency[latency_bucket(latency)] = responses;
        health
    }

    /// The 99th percentile of the cohort's latency (zero without responses).
    pub fn latency_p99(&self) -> Duration {
        percentile(&self.latency, 0.99)
    }

    /// Server errors per response (0 without responses).
    pub fn error_ratio(&self) -> f64 {
        if self.responses == 0 {
            0.0
        } else {
            self.server_errors as f64 / self.responses as f64
        }
    }

    /// Both cohorts' responses as one.
    pub fn merged(&self, other: &CohortHealth) -> CohortHealth {
        let mut latency = self.latency;
        for (mine, theirs) in latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
        CohortHealth {
            responses: self.responses + other.responses,
            server_errors: self.server_errors + other.server_errors,
            latency,
        }
    }
}

/// Per-cohort response counters, recorded lock-free from any number of tasks.
pub(crate) struct HealthCounters {
    // Indexed by `slot`: established, newcomers, persistent newcomers.
    responses: [AtomicU64; 3],
    server_errors: [AtomicU64; 3],
    latency: [[AtomicU64; LATENCY_BUCKETS]; 3],
}

fn slot(standing: Standing) -> usize {
    match standing {
        Standing::Established => 0,
        Standing::Newcomer => 1,
        Standing::Persistent => 2,
    }
}

impl HealthCounters {
    pub(crate) fn new() -> Self {
        HealthCounters {
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            server_errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Counts one response of `standing`'s cohort (not a 429: the caller filters those).
    #[inline]
    pub(crate) fn record(&self, standing: Standing, status: u16, latency: Duration) {
        let i = slot(standing);
        // Relaxed: independent statistics, read once a tick.
        self.responses[i].fetch_add(1, Ordering::Relaxed);
        if (500..=599).contains(&status) {
            self.server_errors[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency[i][latency_bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The tick's health of `standing`'s cohort; the counters start again from zero.
    pub(crate) fn take(&self, standing: Standing) -> CohortHealth {
        let i = slot(standing);
        CohortHealth {
            responses: self.responses[i].swap(0, Ordering::Relaxed),
            server_errors: self.server_errors[i].swap(0, Ordering::Relaxed),
            latency: drain(&self.latency[i]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_health_adds_counts_and_latency() {
        let fast = CohortHealth::uniform(99, 0, Duration::from_millis(1));
        let slow = CohortHealth::uniform(10, 5, Duration::from_secs(1));
        let both = fast.merged(&slow);
        assert_eq!((both.responses, both.server_errors), (109, 5));
        assert!(fast.latency_p99() < Duration::from_millis(3));
        assert!(both.latency_p99() >= Duration::from_millis(500));
        assert_eq!(CohortHealth::default().error_ratio(), 0.0);
    }
}
