//! The bound, as property tests on the manual clock: over any window of length w a limiter admits at
//! most burst + w / T, and it admits exactly what an independently written token bucket admits, so
//! it is not merely strict but right.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use ratelimit_core::{
    KeyedLimiter, KeyedLimiterBuilder, Limit, ManualClock, MemoryStore, Policy, Store, TokenBucket,
};

/// A token bucket written the textbook way, in nanoseconds of credit: `credit` fills at one
/// nanosecond per nanosecond up to `burst × T`, and a request of cost `c` spends `c × T`.
struct ReferenceBucket {
    credit: u128,
    capacity: u128,
    t: u128,
    last: u128,
}

impl ReferenceBucket {
    fn new(policy: &Policy) -> Self {
        let t = u128::from(policy.emission_interval_ns());
        let capacity = t * u128::from(policy.burst());
        ReferenceBucket {
            credit: capacity,
            capacity,
            t,
            last: 0,
        }
    }

    fn check(&mut self, now: u128, cost: u32) -> bool {
        self.credit = (self.credit + (now - self.last)).min(self.capacity);
        self.last = now;
        let price = self.t * u128::from(cost);
        if self.credit >= price {
            self.credit -= price;
            true
        } else {
            false
        }
    }
}

fn policies() -> impl Strategy<Value = Policy> {
    (1u32..50, 1u64..10_000, 1u32..20).prop_map(|(count, period_ms, burst)| {
        Policy::new(count, Duration::from_millis(period_ms))
            .unwrap()
            .with_burst(burst)
            .unwrap()
    })
}

/// Steps of (time to advance in nanoseconds, cost), spread around the policy's interval.
fn steps() -> impl Strategy<Value = Vec<(u64, u32)>> {
    prop::collection::vec((0u64..2_000_000_000, 1u32..6), 1..200)
}

/// Asserts the bound over every window between two admissions.
fn assert_window_bound(admitted: &[(u64, u32)], policy: &Policy) {
    for (i, (start, _)) in admitted.iter().enumerate() {
        let mut cost = 0u64;
        for (end, c) in admitted.iter().skip(i) {
            cost += u64::from(*c);
            let bound = policy.max_admitted(Duration::from_nanos(end - start));
            assert!(
                cost <= bound,
                "{cost} admitted in {} ns; bound {bound}",
                end - start
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn token_bucket_keeps_the_bound_and_matches_the_reference(policy in policies(), steps in steps()) {
        let clock = ManualClock::new();
        let bucket = TokenBucket::with_clock(policy, clock.clone());
        let mut reference = ReferenceBucket::new(&policy);
        let mut admitted = Vec::new();
        for (advance, cost) in steps {
            // Scale the advance to the policy so both full and empty buckets are common.
            clock.advance(Duration::from_nanos(advance % (policy.emission_interval_ns() * 3 + 1)));
            let now = clock_now(&clock);
            let cost = cost.min(policy.burst());
            let decision = bucket.acquire(cost).unwrap();
            prop_assert_eq!(decision.is_allowed(), reference.check(u128::from(now), cost));
            if decision.is_allowed() {
                admitted.push((now, cost));
            } else {
                prop_assert!(decision.retry_after() > Duration::ZERO);
            }
            prop_assert!(decision.remaining() <= policy.burst());
        }
        assert_window_bound(&admitted, &policy);
    }

    #[test]
    fn retry_after_is_exact(policy in policies(), used in 1u32..20, cost in 1u32..20) {
        let clock = ManualClock::new();
        let bucket = TokenBucket::with_clock(policy, clock.clone());
        bucket.acquire(used.min(policy.burst())).unwrap();
        let cost = cost.min(policy.burst());
        let decision = bucket.acquire(cost).unwrap();
        if !decision.is_allowed() {
            let wait = u64::try_from(decision.retry_after().as_nanos()).unwrap();
            clock.advance(Duration::from_nanos(wait - 1));
            prop_assert!(!bucket.peek(cost).unwrap().is_allowed(), "admitted before retry-after");
            clock.advance(Duration::from_nanos(1));
            prop_assert!(bucket.acquire(cost).unwrap().is_allowed(), "denied at retry-after");
        }
    }

    #[test]
    fn keyed_limiter_keeps_the_bound_per_key(policy in policies(), steps in prop::collection::vec((0u64..2_000_000_000, 1u32..6, 0usize..4), 1..200)) {
        let clock = ManualClock::new();
        // A tiny table: sweeping and refusal run all the time, and must never hand out extra tokens.
        let limiter: KeyedLimiter<u32, ManualClock> =
            KeyedLimiterBuilder::new(policy).clock(clock.clone()).max_keys(3).shards(2).build();
        let mut admitted: Vec<Vec<(u64, u32)>> = vec![Vec::new(); 4];
        let mut references: Vec<ReferenceBucket> = (0..4).map(|_| ReferenceBucket::new(&policy)).collect();
        for (advance, cost, key) in steps {
            clock.advance(Duration::from_nanos(advance % (policy.emission_interval_ns() * 3 + 1)));
            let now = clock_now(&clock);
            let cost = cost.min(policy.burst());
            let decision = limiter.acquire(&(key as u32), cost).unwrap();
            prop_assert!(limiter.len() <= 3);
            let reference = references[key].check(u128::from(now), cost);
            if decision.is_allowed() {
                // Never admits what a bucket of its own would not: refusal only ever denies more.
                prop_assert!(reference, "admitted what the reference denied");
                admitted[key].push((now, cost));
            } else if reference {
                // Refused for room: the reference must not count it as spent.
                references[key].credit += u128::from(policy.emission_interval_ns()) * u128::from(cost);
            }
        }
        for per_key in &admitted {
            assert_window_bound(per_key, &policy);
        }
    }

    #[test]
    fn memory_store_multi_limits_keep_every_bound(a in policies(), b in policies(), steps in prop::collection::vec((0u64..2_000_000_000, 1u32..4, any::<bool>()), 1..150)) {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(1000, clock.clone());
        let mut admitted_a = Vec::new();
        let mut admitted_b = Vec::new();
        let mut ref_a = ReferenceBucket::new(&a);
        let mut ref_b = ReferenceBucket::new(&b);
        for (advance, cost, both) in steps {
            clock.advance(Duration::from_nanos(advance % (a.emission_interval_ns().min(b.emission_interval_ns()) * 3 + 1)));
            let now = clock_now(&clock);
            let cost = cost.min(a.burst()).min(b.burst());
            let limits: Vec<Limit<'_>> = if both {
                vec![Limit::new("a", a).with_cost(cost), Limit::new("b", b).with_cost(cost)]
            } else {
                vec![Limit::new("a", a).with_cost(cost)]
            };
            let verdict = store.acquire_sync(&limits).unwrap().unwrap();
            // The reference: all-or-nothing over two independent textbook buckets.
            let expected = if both {
                let (mut ta, mut tb) = (clone_ref(&ref_a), clone_ref(&ref_b));
                let ok = ta.check(u128::from(now), cost) && tb.check(u128::from(now), cost);
                if ok { ref_a = ta; ref_b = tb; } else {
                    ref_a.check(u128::from(now), 0);
                    ref_b.check(u128::from(now), 0);
                }
                ok
            } else {
                ref_a.check(u128::from(now), cost)
            };
            prop_assert_eq!(verdict.is_allowed(), expected);
            if verdict.is_allowed() {
                admitted_a.push((now, cost));
                if both { admitted_b.push((now, cost)); }
            }
        }
        assert_window_bound(&admitted_a, &a);
        assert_window_bound(&admitted_b, &b);
    }
}

fn clone_ref(r: &ReferenceBucket) -> ReferenceBucket {
    ReferenceBucket {
        credit: r.credit,
        capacity: r.capacity,
        t: r.t,
        last: r.last,
    }
}

fn clock_now(clock: &ManualClock) -> u64 {
    use ratelimit_core::Clock;
    clock.now()
}
