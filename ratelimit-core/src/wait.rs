//! Sleeping until a denied request would be admitted.

use std::time::Duration;

use crate::policy::Policy;

/// Sleeps for `retry_after` plus a random share of one emission interval.
///
/// Waiters denied by the same bucket all see nearly the same retry-after; without jitter they would
/// wake together, one would win and the rest would sleep again (a thundering herd on every token).
/// Spreading them over one emission interval, the time one token takes to come back, lets them
/// arrive about as fast as tokens do.
pub(crate) async fn sleep_with_jitter(retry_after: Duration, policy: &Policy) {
    let spread = policy.emission_interval_ns().min(1_000_000_000);
    let jitter = Duration::from_nanos(fastrand::u64(0..=spread));
    tokio::time::sleep(retry_after.saturating_add(jitter)).await;
}
