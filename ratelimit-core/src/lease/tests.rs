//! The leases' unit tests: exact spending under contention, expiry, one fetch at a time, denied
//! leases, eviction, the rate estimate, the lease size, a full table and invalid configurations.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::policy::Policy;

use super::*;

fn policy() -> Policy {
    Policy::per_second(100).unwrap()
}

#[test]
fn spending_is_exact_under_contention() {
    let slot = Slot::new(0);
    let p = policy();
    slot.claim().unwrap().install(10_000, &p, u64::MAX);
    let spent = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while let Spend::Spent(_) = slot.spend(3, &p, 1) {
                    spent.fetch_add(3, Ordering::Relaxed);
                }
            });
        }
    });
    // 3,333 spends of 3; the last token can never be spent by a request of 3.
    assert_eq!(spent.load(Ordering::Relaxed), 9_999);
    assert_eq!(slot.spend(1, &p, 1), Spend::Spent(0));
    assert_eq!(slot.spend(1, &p, 1), Spend::Empty);
}

#[test]
fn a_lease_expires_and_belongs_to_its_policy() {
    let slot = Slot::new(0);
    let p = policy();
    slot.claim().unwrap().install(5, &p, 1_000);
    assert_eq!(slot.spend(1, &p, 999), Spend::Spent(4));
    let other = p.with_burst(50).unwrap();
    assert_eq!(slot.spend(1, &other, 999), Spend::Empty, "another policy");
    assert_eq!(slot.spend(1, &p, 1_000), Spend::Empty, "expired");
    assert_eq!(slot.spend(5, &p, 10), Spend::Empty, "more than is left");
}

#[test]
fn only_one_fetch_at_a_time_and_it_drops_the_old_lease() {
    let slot = Slot::new(0);
    let p = policy();
    slot.claim().unwrap().install(5, &p, u64::MAX);
    let fetch = slot.claim().unwrap();
    assert!(slot.is_fetching());
    assert!(
        slot.claim().is_none(),
        "a second fetch while one is in flight"
    );
    assert_eq!(
        slot.spend(1, &p, 1),
        Spend::Empty,
        "the old lease's tokens are dropped before the next one is asked for"
    );
    assert!(!slot.evict(), "a slot being fetched is not evicted");
    fetch.install(3, &p, u64::MAX);
    assert!(!slot.is_fetching());
    assert_eq!(slot.spend(1, &p, 1), Spend::Spent(2));
    // A cancelled fetch (dropped guard) lets the next task fetch.
    drop(slot.claim().unwrap());
    assert!(slot.claim().is_some());
}

#[test]
fn concurrent_claims_have_one_winner() {
    let slot = Slot::new(0);
    let winners = AtomicU64::new(0);
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                barrier.wait();
                if let Some(fetch) = slot.claim() {
                    winners.fetch_add(1, Ordering::Relaxed);
                    // Held until every thread has tried.
                    barrier.wait();
                    drop(fetch);
                } else {
                    barrier.wait();
                }
            });
        }
    });
    assert_eq!(winners.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_wake_when_the_fetch_ends() {
    let slot = Arc::new(Slot::new(0));
    let fetch_slot = slot.clone();
    let p = policy();
    let claimed = tokio::sync::oneshot::channel::<()>();
    let fetcher = tokio::spawn(async move {
        let fetch = fetch_slot.claim().unwrap();
        claimed.0.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        fetch.install(4, &p, u64::MAX);
    });
    claimed.1.await.unwrap();
    let started = tokio::time::Instant::now();
    slot.wait_for_fetch(Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "not woken");
    assert_eq!(slot.spend(1, &p, 1), Spend::Spent(3));
    fetcher.await.unwrap();
}

#[test]
fn a_denied_lease_denies_until_its_retry_after() {
    let slot = Slot::new(0);
    let p = policy();
    slot.claim().unwrap().deny(500);
    assert_eq!(slot.spend(1, &p, 10), Spend::Denied(500));
    assert_eq!(slot.spend(1, &p, 500), Spend::Empty, "room again: fetch");
    let fetch = slot.claim().unwrap();
    fetch.install(2, &p, u64::MAX);
    assert_eq!(slot.spend(1, &p, 501), Spend::Spent(1));
}

#[test]
fn eviction_kills_the_slot_and_its_tokens() {
    let slot = Slot::new(0);
    let p = policy();
    slot.claim().unwrap().install(5, &p, u64::MAX);
    assert!(slot.evict());
    assert!(slot.is_dead());
    assert_eq!(slot.spend(1, &p, 1), Spend::Empty);
    assert!(slot.claim().is_none(), "a dead slot is never fetched again");
}

#[test]
fn the_rate_estimate_follows_the_key() {
    let slot = Slot::new(0);
    let window = 1_000;
    for i in 0..10 {
        slot.observe(1, i, window);
    }
    assert_eq!(slot.observe(1, 10, window), 11, "the current window so far");
    assert_eq!(slot.observe(1, 1_500, window), 11, "the last whole window");
    assert_eq!(slot.observe(1, 10_000, window), 1, "idle for a while");
}

#[test]
fn lease_size_is_capped_by_share_and_burst_and_floored_by_min_tokens() {
    let mut config = LeaseConfig::new(30, Duration::from_secs(1));
    config.min_tokens = 3;
    let leases = Leases::new(config);
    let p = Policy::per_second(100).unwrap();
    assert_eq!(
        leases.lease_size(1_000, &p, 3),
        Some(10),
        "max_outstanding / replicas"
    );
    assert_eq!(
        leases.lease_size(8, &p, 3),
        Some(4),
        "half a ttl of traffic"
    );
    assert_eq!(
        leases.lease_size(5, &p, 3),
        None,
        "below min_tokens: exact path"
    );
    let small = p.with_burst(12).unwrap();
    assert_eq!(
        leases.lease_size(1_000, &small, 3),
        Some(4),
        "burst / replicas"
    );
    assert_eq!(
        leases.lease_size(1_000, &small, 5),
        None,
        "burst too small to share"
    );
}

#[test]
fn a_full_table_sends_new_keys_to_the_exact_path_and_forgets_stale_ones() {
    let mut config = LeaseConfig::new(30, Duration::from_nanos(1_000));
    config.max_keys = 16; // one per shard
    let leases = Leases::new(config);
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        match leases.slot(&format!("k{i}"), 0) {
            Some(slot) => held.push(slot),
            None => refused += 1,
        }
    }
    assert_eq!(leases.len(), 16);
    assert_eq!(held.len(), 16);
    assert_eq!(refused, 184);
    // A slot being fetched is never evicted, even when stale.
    let busy = held[0].claim().unwrap();
    // Two windows later every idle slot is stale, and room is made for new keys.
    for i in 200..400 {
        let _ = leases.slot(&format!("k{i}"), 2_000);
    }
    assert!(!held[0].is_dead());
    assert!(held[1..].iter().all(|s| s.is_dead()));
    assert_eq!(leases.len(), 16);
    drop(busy);
}

#[test]
fn invalid_configurations_are_typed_errors() {
    let ok = LeaseConfig::new(30, Duration::from_secs(1));
    assert_eq!(ok.validate(3), Ok(()));
    let zero_ttl = LeaseConfig {
        ttl: Duration::ZERO,
        ..ok
    };
    assert_eq!(zero_ttl.validate(3), Err(LeaseConfigError::ZeroTtl));
    assert_eq!(
        ok.validate(31),
        Err(LeaseConfigError::OutstandingBelowReplicas {
            max_outstanding: 30,
            replicas: 31
        })
    );
    assert_eq!(
        LeaseConfig {
            min_tokens: 0,
            ..ok
        }
        .validate(3),
        Err(LeaseConfigError::ZeroMinTokens)
    );
    assert_eq!(
        LeaseConfig { max_keys: 0, ..ok }.validate(3),
        Err(LeaseConfigError::ZeroKeys)
    );
    assert_eq!(
        LeaseConfig {
            min_tokens: 11,
            ..ok
        }
        .validate(3),
        Err(LeaseConfigError::MinTokensAboveShare {
            min_tokens: 11,
            share: 10
        })
    );
}
