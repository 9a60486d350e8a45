//! The keyed limiter: bounded memory, eviction that never resets a key, runtime policies, several
//! limits.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ratelimit_core::{KeyedLimiter, KeyedLimiterBuilder, ManualClock, Policy, RequestError};

fn limiter(policy: Policy, max_keys: usize) -> (KeyedLimiter<u64, ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let limiter = KeyedLimiterBuilder::new(policy)
        .clock(clock.clone())
        .max_keys(max_keys)
        .shards(4)
        .build();
    (limiter, clock)
}

#[test]
fn full_buckets_are_dropped_as_the_limiter_goes() {
    let policy = Policy::per_second(10).unwrap();
    let (limiter, clock) = limiter(policy, 1_000);
    // 100,000 distinct keys, each idle again a second later: the table never holds more than max.
    for key in 0..100_000u64 {
        assert!(limiter.acquire(&key, 1).unwrap().is_allowed());
        assert!(limiter.len() <= 1_000);
        if key % 100 == 99 {
            clock.advance(Duration::from_secs(1));
        }
    }
    assert_eq!(limiter.refused_when_full(), 0, "idle keys should make room");
    clock.advance(Duration::from_secs(1));
    limiter.retain_recent();
    assert_eq!(limiter.len(), 0);
}

#[test]
fn a_full_table_serves_newcomers_and_never_resets_an_evicted_key() {
    let policy = Policy::per_hour(2).unwrap();
    let (limiter, clock) = limiter(policy, 8);
    for key in 0..8u64 {
        assert!(limiter.acquire(&key, 2).unwrap().is_allowed());
    }
    assert_eq!(limiter.len(), 8);
    // A newcomer finds the table full of spent keys: some are evicted and it is served.
    assert!(limiter.acquire(&100, 1).unwrap().is_allowed());
    assert!(limiter.evicted() > 0);
    assert_eq!(limiter.refused_when_full(), 0);
    assert!(limiter.len() <= 8);
    // Every evicted key comes back with the debt it left with: none got a fresh bucket.
    for key in 0..8u64 {
        assert!(!limiter.acquire(&key, 1).unwrap().is_allowed(), "key {key}");
    }
    assert!(limiter.len() <= 8);
    // Once the time has passed, they are full again.
    clock.advance(Duration::from_secs(3600));
    for key in 0..8u64 {
        assert!(limiter.acquire(&key, 1).unwrap().is_allowed());
    }
}

#[test]
fn a_denial_writes_nothing_not_even_a_bucket() {
    let policy = Policy::per_hour(1).unwrap();
    let (limiter, _clock) = limiter(policy, 8);
    assert!(limiter.peek(&1, 1).unwrap().is_allowed());
    assert_eq!(limiter.len(), 0, "peek created a bucket");
    assert_eq!(
        limiter.acquire(&1, 2),
        Err(RequestError::CostExceedsBurst { cost: 2, burst: 1 })
    );
    assert_eq!(limiter.len(), 0);
}

#[test]
fn per_key_overrides_and_runtime_changes() {
    let (limiter, _clock) = limiter(Policy::per_hour(1).unwrap(), 100);
    limiter.set_policy(7, Policy::per_hour(3).unwrap());
    assert_eq!(limiter.policy_for(&7).burst(), 3);
    assert_eq!(limiter.policy_for(&8).burst(), 1);
    for _ in 0..3 {
        assert!(limiter.acquire(&7, 1).unwrap().is_allowed());
    }
    assert!(!limiter.acquire(&7, 1).unwrap().is_allowed());
    assert!(limiter.acquire(&8, 1).unwrap().is_allowed());
    assert!(!limiter.acquire(&8, 1).unwrap().is_allowed());

    // A change applies from the next decision, to the state the bucket has. The state is time (when
    // the bucket is full again), so a larger burst at the same rate gives key 8 one more token...
    limiter.set_default_policy(Policy::per_hour(1).unwrap().with_burst(2).unwrap());
    assert!(limiter.acquire(&8, 1).unwrap().is_allowed());
    assert!(!limiter.acquire(&8, 1).unwrap().is_allowed());
    // ...while a faster rate counts the same two hours of debt as four tokens of four: still empty.
    limiter.set_default_policy(Policy::per_hour(4).unwrap().with_burst(4).unwrap());
    assert!(!limiter.acquire(&8, 1).unwrap().is_allowed());

    // Tightening a key does not hand it a fresh bucket: it stays exhausted.
    limiter.clear_policy(&7);
    assert_eq!(limiter.policy_for(&7).burst(), 4);
    assert!(!limiter.acquire(&7, 1).unwrap().is_allowed());
    limiter.reset(&7);
    assert!(limiter.acquire(&7, 1).unwrap().is_allowed());
}

#[test]
fn several_keys_all_or_nothing() {
    let (limiter, _clock) = limiter(Policy::per_hour(5).unwrap(), 100);
    limiter.set_policy(1, Policy::per_hour(1).unwrap());
    let (allowed, decisions) = limiter.acquire_all(&[(&0, 1), (&1, 1)]).unwrap();
    assert!(allowed);
    assert_eq!(decisions[0].remaining(), 4);
    assert_eq!(decisions[1].remaining(), 0);
    let (allowed, decisions) = limiter.acquire_all(&[(&0, 1), (&1, 1)]).unwrap();
    assert!(!allowed);
    assert!(decisions[0].is_allowed() && !decisions[1].is_allowed());
    // Key 0 was not debited by the denied request: 4 left.
    assert!(limiter.peek(&0, 4).unwrap().is_allowed());
    assert!(!limiter.peek(&0, 5).unwrap().is_allowed());
    assert_eq!(
        limiter.acquire_all(&[(&0, 1), (&0, 1)]),
        Err(RequestError::DuplicateKey { position: 1 })
    );
    assert_eq!(limiter.acquire_all::<u64>(&[]), Err(RequestError::NoLimits));
}

#[test]
fn multi_limit_newcomers_respect_the_key_limit() {
    // One shard: eviction during a multi-limit check only looks in the shards the check holds.
    let limiter: KeyedLimiter<u64, ManualClock> =
        KeyedLimiterBuilder::new(Policy::per_hour(5).unwrap())
            .clock(ManualClock::new())
            .max_keys(3)
            .shards(1)
            .build();
    assert!(limiter.acquire_all(&[(&0, 1), (&1, 1)]).unwrap().0);
    // Two newcomers but one slot: key 1 (not in the request) is evicted to make room, and the
    // request's own bucket stays.
    let (allowed, _) = limiter.acquire_all(&[(&0, 1), (&2, 1), (&3, 1)]).unwrap();
    assert!(allowed);
    assert!(limiter.len() <= 3);
    assert!(limiter.peek(&0, 3).unwrap().is_allowed());
    assert!(
        !limiter.peek(&0, 4).unwrap().is_allowed(),
        "key 0 was debited twice"
    );
    // The evicted key comes back with its debt.
    assert!(limiter.peek(&1, 4).unwrap().is_allowed());
    assert!(
        !limiter.peek(&1, 5).unwrap().is_allowed(),
        "key 1 came back fresh"
    );
}

#[test]
fn string_keys_are_looked_up_without_allocating_a_string() {
    let limiter: KeyedLimiter<String> = KeyedLimiter::new(Policy::per_hour(1).unwrap());
    assert!(limiter.acquire("198.51.100.1", 1).unwrap().is_allowed());
    assert!(!limiter.acquire("198.51.100.1", 1).unwrap().is_allowed());
    assert!(limiter.acquire("198.51.100.2", 1).unwrap().is_allowed());
    assert_eq!(limiter.len(), 2);
}
