//! The answer a limiter gives for one limit.

use std::time::Duration;

/// The answer for one limit: admitted or not, and what the caller may tell its client.
///
/// The numbers are kept raw (nanoseconds, and `remaining` as time left in the bucket) and turned into
/// counts and durations only when asked for, so that a decision the caller merely branches on costs
/// no division on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    limit: u32,
    // remaining = remaining_raw / remaining_unit, computed on demand.
    remaining_raw: u64,
    remaining_unit: u64,
    retry_after_ns: u64,
    reset_after_ns: u64,
}

impl Decision {
    /// A decision from plain numbers, as a store that computed them itself reports them.
    ///
    /// `retry_after` is raised to one nanosecond when `allowed` is false, so a denial always
    /// tells the caller to wait a little; it is zero when `allowed` is true.
    pub fn new(
        allowed: bool,
        limit: u32,
        remaining: u32,
        retry_after: Duration,
        reset_after: Duration,
    ) -> Self {
        let retry_after_ns = if allowed {
            0
        } else {
            duration_ns(retry_after).max(1)
        };
        Decision {
            allowed,
            limit,
            remaining_raw: u64::from(remaining.min(limit)),
            remaining_unit: 1,
            retry_after_ns,
            reset_after_ns: duration_ns(reset_after),
        }
    }

    /// A decision straight from the GCRA state: `slack_ns` of the tolerance left, in units of
    /// `emission_interval_ns`.
    #[inline]
    pub(crate) fn from_gcra(
        allowed: bool,
        limit: u32,
        slack_ns: u64,
        emission_interval_ns: u64,
        retry_after_ns: u64,
        reset_after_ns: u64,
    ) -> Self {
        Decision {
            allowed,
            limit,
            remaining_raw: slack_ns,
            remaining_unit: emission_interval_ns,
            retry_after_ns,
            reset_after_ns,
        }
    }

    /// Whether the request was admitted (and, for a checking call, debited).
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The limit's capacity (its burst): the `limit` of the `RateLimit` header fields.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whole requests of cost 1 that the bucket would admit right now, after this decision.
    pub fn remaining(&self) -> u32 {
        let remaining = self
            .remaining_raw
            .checked_div(self.remaining_unit)
            .unwrap_or(0);
        u32::try_from(remaining).unwrap_or(u32::MAX).min(self.limit)
    }

    /// How long to wait before the same request would be admitted; zero when it was admitted,
    /// and never zero when it was not.
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after_ns)
    }

    /// How long until the bucket is full again (nothing of it in use).
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after_ns)
    }

    /// This decision, with `allowed` forced to true: for shadow mode and fail-open paths, which
    /// report what the limit said but let the request through.
    pub fn admitted_anyway(self) -> Self {
        Decision {
            allowed: true,
            ..self
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
