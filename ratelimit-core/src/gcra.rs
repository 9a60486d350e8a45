//! The Generic Cell Rate Algorithm on integers: the one piece of arithmetic every limiter shares.
//!
//! A bucket's whole state is one number, its *theoretical arrival time* (TAT): the instant at which
//! the bucket would be full again. A request of cost `c` at time `now` moves it to
//! `max(TAT, now) + c·T` and is admitted when that is at most `now + τ`, where `T` is the emission
//! interval and `τ = burst·T` the tolerance. A TAT at or before `now` is a full bucket, so a state of
//! zero is a fresh bucket, and a bucket that is full again can be forgotten without changing any
//! future decision. Over any window of length `w` the admitted cost is at most `burst + w / T`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Decision;
use crate::error::RequestError;
use crate::policy::Policy;

/// What one GCRA step decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The decision to report.
    pub decision: Decision,
    /// The TAT to store when the request is admitted; `None` when it is denied (a denial writes nothing).
    pub new_tat: Option<u64>,
}

/// Checks that `cost` can ever be admitted under `policy`.
#[inline]
pub fn validate_cost(policy: &Policy, cost: u32) -> Result<(), RequestError> {
    if cost == 0 {
        return Err(RequestError::ZeroCost);
    }
    if cost > policy.burst() {
        return Err(RequestError::CostExceedsBurst {
            cost,
            burst: policy.burst(),
        });
    }
    Ok(())
}

/// One GCRA step: the decision for `cost` at `now` on a bucket whose TAT is `tat`.
pub fn decide(tat: u64, now: u64, policy: &Policy, cost: u32) -> Result<Step, RequestError> {
    validate_cost(policy, cost)?;
    Ok(decide_valid(tat, now, policy, cost))
}

/// [`decide`] for a cost already checked by [`validate_cost`].
#[inline]
pub(crate) fn decide_valid(tat: u64, now: u64, policy: &Policy, cost: u32) -> Step {
    let t = policy.emission_interval_ns();
    let tolerance = policy.tolerance_ns();
    // cost <= burst, so increment <= tolerance <= 2^62: no overflow.
    let increment = t.saturating_mul(u64::from(cost));
    let base = tat.max(now);
    let new_tat = base.saturating_add(increment);
    let allow_at = new_tat.saturating_sub(tolerance);
    if allow_at <= now {
        let reset_after = new_tat.saturating_sub(now);
        Step {
            decision: Decision::from_gcra(
                true,
                policy.burst(),
                tolerance.saturating_sub(reset_after),
                t,
                0,
                reset_after,
            ),
            new_tat: Some(new_tat),
        }
    } else {
        let reset_after = base.saturating_sub(now);
        Step {
            decision: Decision::from_gcra(
                false,
                policy.burst(),
                tolerance.saturating_sub(reset_after),
                t,
                allow_at.saturating_sub(now), // >= 1, since allow_at > now
                reset_after,
            ),
            new_tat: None,
        }
    }
}

/// Whether a bucket with this TAT is full at `now`, and so can be dropped without changing anything.
#[inline]
pub fn is_full(tat: u64, now: u64) -> bool {
    tat <= now
}

/// One GCRA step on a shared word with compare-and-swap: the whole hot path of every local bucket.
/// `cost` must have passed [`validate_cost`].
#[inline]
pub(crate) fn decide_atomic(state: &AtomicU64, now: u64, policy: &Policy, cost: u32) -> Decision {
    // Relaxed throughout: the bucket's whole state is this one word and no other memory is
    // published through it. Atomicity of the compare-and-swap alone guarantees that two callers
    // never both spend the same tokens (every RMW sees the latest value in the word's modification
    // order); no happens-before edge with other data is needed.
    let mut tat = state.load(Ordering::Relaxed);
    loop {
        let step = decide_valid(tat, now, policy, cost);
        let Some(new_tat) = step.new_tat else {
            return step.decision; // a denial writes nothing
        };
        // A lost race means another caller moved the TAT; decide again from its value. `now` is not
        // read again: an older `now` only refills less, so a retry can never over-admit.
        match state.compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return step.decision,
            Err(current) => tat = current,
        }
    }
}
