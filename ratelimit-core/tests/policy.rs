//! Policies and requests: every invalid input is a typed error, and nothing panics on any input.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{
    KeyedLimiter, KeyedLimiterBuilder, ManualClock, Policy, PolicyError, RequestError, TokenBucket,
    gcra,
};

#[test]
fn invalid_policies_are_typed_errors() {
    assert_eq!(Policy::per_second(0), Err(PolicyError::ZeroCount));
    assert_eq!(Policy::new(5, Duration::ZERO), Err(PolicyError::ZeroPeriod));
    assert_eq!(
        Policy::per_second(5).unwrap().with_burst(0),
        Err(PolicyError::ZeroBurst)
    );
    assert_eq!(
        Policy::new(2_000, Duration::from_micros(1)),
        Err(PolicyError::RateTooFine {
            count: 2_000,
            period: Duration::from_micros(1)
        })
    );
    assert_eq!(
        Policy::new(1, Duration::from_secs(u64::MAX)),
        Err(PolicyError::Overflow)
    );
    assert_eq!(
        Policy::per_day(1).unwrap().with_burst(u32::MAX),
        Err(PolicyError::Overflow)
    );
    assert_eq!(Policy::from_parts(0, 1), Err(PolicyError::ZeroPeriod));
}

#[test]
fn names_cannot_be_misread() {
    assert_eq!(
        Policy::per_second(100).unwrap().emission_interval(),
        Duration::from_millis(10)
    );
    assert_eq!(Policy::per_second(100).unwrap().burst(), 100);
    assert_eq!(
        Policy::per_minute(60).unwrap().emission_interval(),
        Duration::from_secs(1)
    );
    assert_eq!(
        Policy::per_hour(1).unwrap().emission_interval(),
        Duration::from_secs(3600)
    );
    // A rate that does not divide evenly rounds the interval up: never faster than asked.
    assert_eq!(
        Policy::per_second(3).unwrap().emission_interval_ns(),
        333_333_334
    );
    // A nanosecond per request is the finest rate the clock expresses.
    assert!(Policy::per_second(1_000_000_000).is_ok());
}

#[test]
fn bad_costs_are_typed_errors() {
    let bucket = TokenBucket::with_clock(Policy::per_second(5).unwrap(), ManualClock::new());
    assert_eq!(bucket.acquire(0), Err(RequestError::ZeroCost));
    assert_eq!(
        bucket.acquire(6),
        Err(RequestError::CostExceedsBurst { cost: 6, burst: 5 })
    );
    assert_eq!(
        bucket.peek(6),
        Err(RequestError::CostExceedsBurst { cost: 6, burst: 5 })
    );
    // The refused requests took nothing.
    assert!(bucket.acquire(5).unwrap().is_allowed());
}

#[test]
fn denial_never_says_retry_now() {
    let clock = ManualClock::new();
    let bucket = TokenBucket::with_clock(Policy::per_second(1_000_000_000).unwrap(), clock);
    bucket.acquire(bucket.policy().burst()).unwrap();
    let denied = bucket.acquire(1).unwrap();
    assert!(!denied.is_allowed());
    assert!(denied.retry_after() >= Duration::from_nanos(1));
}

proptest! {
    #[test]
    fn policy_constructors_never_panic(count: u32, secs: u64, nanos in 0u32..1_000_000_000, burst: u32, t: u64) {
        let period = Duration::new(secs, nanos);
        if let Ok(policy) = Policy::new(count, period) {
            prop_assert!(policy.emission_interval_ns() >= 1);
            prop_assert!(u128::from(policy.emission_interval_ns()) * u128::from(count) >= period.as_nanos());
            if let Ok(p) = policy.with_burst(burst) {
                prop_assert_eq!(p.tolerance_ns(), p.emission_interval_ns() * u64::from(burst));
            }
        }
        let _ = Policy::from_parts(t, burst);
    }

    #[test]
    fn checks_never_panic(tat: u64, now: u64, t in 1u64..u64::MAX, burst in 1u32..u32::MAX, cost: u32) {
        if let Ok(policy) = Policy::from_parts(t, burst) {
            match gcra::decide(tat, now, &policy, cost) {
                Ok(step) => {
                    let d = step.decision;
                    prop_assert!(d.remaining() <= d.limit());
                    prop_assert_eq!(d.is_allowed(), step.new_tat.is_some());
                    prop_assert_eq!(d.is_allowed(), d.retry_after().is_zero());
                }
                Err(RequestError::ZeroCost) => prop_assert_eq!(cost, 0),
                Err(RequestError::CostExceedsBurst { .. }) => prop_assert!(cost > burst),
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }

    #[test]
    fn keyed_checks_never_panic(key in ".{0,64}", cost: u32, burst in 1u32..1000) {
        let policy = Policy::per_second(10).unwrap().with_burst(burst).unwrap();
        let limiter: KeyedLimiter<String, ManualClock> =
            KeyedLimiterBuilder::new(policy).clock(ManualClock::new()).max_keys(4).build();
        let _ = limiter.acquire(key.as_str(), cost);
        let _ = limiter.peek(key.as_str(), cost);
        let _ = limiter.acquire_all(&[(key.as_str(), cost), ("other", 1)]);
    }
}
