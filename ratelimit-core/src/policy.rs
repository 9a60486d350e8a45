//! The policy: a rate and a burst, as integers on the clock's nanosecond grid.

use std::time::Duration;

use crate::error::PolicyError;

/// The largest tolerance (burst × emission interval) a policy may have: 2^62 ns, about 146 years.
///
/// Keeping it well under `u64::MAX` means `now + tolerance` never overflows for any clock reading a
/// process will see, so the GCRA arithmetic needs no overflow branches on the hot path.
const MAX_TOLERANCE_NS: u64 = 1 << 62;

/// A rate limit: `count` requests per `period`, with a bucket of `burst` requests.
///
/// The rate is stored as the GCRA *emission interval* `T = period / count`, in whole nanoseconds and
/// rounded **up**, so a policy never admits faster than it says (`per_second(3)` admits one request
/// every 333,333,334 ns). Over any window of length `w`, a bucket under this policy admits at most
/// `burst + w / T` cost, which is at most `burst + rate × w`.
///
/// ```
/// use ratelimit_core::Policy;
/// use std::time::Duration;
///
/// let api = Policy::per_second(100)?;                 // 100 a second, bursts of 100
/// let login = Policy::per_minute(10)?.with_burst(3)?; // 10 a minute, at most 3 at once
/// let custom = Policy::new(5, Duration::from_millis(250))?;
/// assert_eq!(api.burst(), 100);
/// assert_eq!(login.emission_interval(), Duration::from_secs(6));
/// assert_eq!(custom.emission_interval(), Duration::from_millis(50));
/// # Ok::<(), ratelimit_core::PolicyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    emission_interval_ns: u64,
    burst: u32,
    tolerance_ns: u64,
}

impl Policy {
    /// `count` requests per `period`, with a burst of `count`.
    pub fn new(count: u32, period: Duration) -> Result<Self, PolicyError> {
        if count == 0 {
            return Err(PolicyError::ZeroCount);
        }
        if period.is_zero() {
            return Err(PolicyError::ZeroPeriod);
        }
        let period_ns = u64::try_from(period.as_nanos()).map_err(|_| PolicyError::Overflow)?;
        if period_ns < u64::from(count) {
            return Err(PolicyError::RateTooFine {
                count: u64::from(count),
                period,
            });
        }
        let emission_interval_ns = period_ns.div_ceil(u64::from(count));
        Self::from_parts(emission_interval_ns, count)
    }

    /// `count` requests per second, with a burst of `count`.
    pub fn per_second(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute, with a burst of `count`.
    pub fn per_minute(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour, with a burst of `count`.
    pub fn per_hour(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `count` requests per day, with a burst of `count`.
    pub fn per_day(count: u32) -> Result<Self, PolicyError> {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// The same rate with another burst (bucket capacity).
    pub fn with_burst(self, burst: u32) -> Result<Self, PolicyError> {
        Self::from_parts(self.emission_interval_ns, burst)
    }

    /// A policy from its GCRA parameters: one token every `emission_interval_ns`, `burst` tokens at most.
    pub fn from_parts(emission_interval_ns: u64, burst: u32) -> Result<Self, PolicyError> {
        if emission_interval_ns == 0 {
            return Err(PolicyError::ZeroPeriod);
        }
        if burst == 0 {
            return Err(PolicyError::ZeroBurst);
        }
        let tolerance_ns = emission_interval_ns
            .checked_mul(u64::from(burst))
            .filter(|t| *t <= MAX_TOLERANCE_NS)
            .ok_or(PolicyError::Overflow)?;
        Ok(Policy {
            emission_interval_ns,
            burst,
            tolerance_ns,
        })
    }

    /// The bucket capacity: the most cost admitted at once, and the `limit` reported in decisions.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Time for one token to come back.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_interval_ns)
    }

    /// [`emission_interval`](Self::emission_interval) in nanoseconds.
    pub fn emission_interval_ns(&self) -> u64 {
        self.emission_interval_ns
    }

    /// This policy's share on one of `parts` deciders that each enforce it alone (replicas falling
    /// back to local buckets): the rate divided by `parts` and the burst too, but never below 1.
    /// Together the parts admit at most `parts × max(1, burst / parts) + rate × w` over a window
    /// `w`: the policy's own bound when `burst >= parts`.
    pub fn share(&self, parts: u32) -> Result<Policy, PolicyError> {
        let parts = parts.max(1);
        Policy::from_parts(
            self.emission_interval_ns.saturating_mul(u64::from(parts)),
            (self.burst / parts).max(1),
        )
    }

    /// Time for an empty bucket to fill up again: burst × emission interval, in nanoseconds.
    pub fn tolerance_ns(&self) -> u64 {
        self.tolerance_ns
    }

    /// The most cost this policy admits over a window of length `window`: `burst + window / T`.
    ///
    /// This is the bound every limiter in the workspace keeps, and the one its tests check.
    pub fn max_admitted(&self, window: Duration) -> u64 {
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        u64::from(self.burst).saturating_add(window_ns / self.emission_interval_ns)
    }
}
