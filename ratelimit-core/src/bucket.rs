//! One lock-free bucket: a GCRA state in a single `AtomicU64`.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::clock::{Clock, MonotonicClock};
use crate::decision::Decision;
use crate::error::RequestError;
use crate::gcra;
use crate::policy::Policy;

/// A single rate limit, shared by reference across threads, decided with one compare-and-swap.
///
/// ```
/// use ratelimit_core::{Policy, TokenBucket};
///
/// let bucket = TokenBucket::new(Policy::per_second(2)?);
/// assert!(bucket.acquire(1)?.is_allowed());
/// assert!(bucket.acquire(1)?.is_allowed());
/// let denied = bucket.acquire(1)?;
/// assert!(!denied.is_allowed());
/// assert!(denied.retry_after() > std::time::Duration::ZERO);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TokenBucket<C: Clock = MonotonicClock> {
    // On a cache line of its own: threads sharing the bucket write this word on every admission,
    // and the policy and clock they read on every check must not be evicted along with it.
    tat: CachePadded<AtomicU64>,
    policy: Policy,
    clock: C,
}

impl TokenBucket<MonotonicClock> {
    /// A full bucket on the default monotonic clock.
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, MonotonicClock::new())
    }
}

impl<C: Clock> TokenBucket<C> {
    /// A full bucket on the given clock.
    pub fn with_clock(policy: Policy, clock: C) -> Self {
        TokenBucket {
            tat: CachePadded::new(AtomicU64::new(0)),
            policy,
            clock,
        }
    }

    /// The bucket's policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The bucket's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Admits and debits `cost` if the bucket holds it; a denial changes nothing.
    ///
    /// Returns [`RequestError::CostExceedsBurst`] for a cost the bucket can never hold, rather than a
    /// retry-after that would never come true.
    #[inline]
    pub fn acquire(&self, cost: u32) -> Result<Decision, RequestError> {
        gcra::validate_cost(&self.policy, cost)?;
        Ok(gcra::decide_atomic(
            &self.tat,
            self.clock.now(),
            &self.policy,
            cost,
        ))
    }

    /// What [`acquire`](Self::acquire) would answer now, without consuming anything.
    pub fn peek(&self, cost: u32) -> Result<Decision, RequestError> {
        gcra::validate_cost(&self.policy, cost)?;
        let tat = self.tat.load(Ordering::Relaxed);
        Ok(gcra::decide_valid(tat, self.clock.now(), &self.policy, cost).decision)
    }

    /// Fills the bucket up again.
    pub fn reset(&self) {
        // Relaxed: see gcra::decide_atomic; a reset publishes nothing but the word itself.
        self.tat.store(0, Ordering::Relaxed);
    }

    /// Waits until `cost` is admitted, then returns its decision.
    ///
    /// Nothing is debited until the request is admitted, so dropping the future (a timeout, a
    /// `select!`) loses nothing. Each sleep gets random jitter, so many waiters on one bucket do not
    /// wake as one herd and all but one go back to sleep.
    pub async fn until_ready(&self, cost: u32) -> Result<Decision, RequestError> {
        loop {
            let decision = self.acquire(cost)?;
            if decision.is_allowed() {
                return Ok(decision);
            }
            crate::wait::sleep_with_jitter(decision.retry_after(), &self.policy).await;
        }
    }
}
