//! The failure policy: a store that is down, slow or talking nonsense costs at most the deadline,
//! then the policy decides; decisions go back to the store once it recovers.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ratelimit_core::{
    FailurePolicy, Limit, Limiter, MemoryStore, Policy, RequestError, Store, StoreError,
    StoreFailure, Verdict,
};

const HEALTHY: u8 = 0;
const DOWN: u8 = 1;
const SLOW: u8 = 2;
const NONSENSE: u8 = 3;

/// A real MemoryStore behind a switch that injects faults a real store cannot produce on demand.
#[derive(Default)]
struct FaultyStore {
    inner: MemoryStore,
    mode: AtomicU8,
    calls: AtomicUsize,
}

impl FaultyStore {
    async fn fault(&self) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.mode.load(Ordering::Relaxed) {
            DOWN => Err(StoreError::unavailable("connection refused")),
            SLOW => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }
            NONSENSE => Err(StoreError::BadReply("expected an array of integers".into())),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.fault().await?;
        self.inner.acquire(limits).await
    }
    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.fault().await?;
        self.inner.peek(limits).await
    }
    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.fault().await?;
        self.inner.reset(key).await
    }
}

fn setup(policy: FailurePolicy) -> (Arc<FaultyStore>, Limiter) {
    let store = Arc::new(FaultyStore::default());
    let limiter = Limiter::from_arc(store.clone())
        .with_failure_policy(policy)
        .with_deadline(Duration::from_millis(30))
        .with_cooldown(Duration::from_millis(200));
    (store, limiter)
}

fn two_per_hour() -> Policy {
    Policy::per_hour(2).unwrap()
}

#[tokio::test]
async fn fail_open_admits_and_says_so() {
    let (store, limiter) = setup(FailurePolicy::Open);
    store.mode.store(DOWN, Ordering::Relaxed);
    for _ in 0..5 {
        let verdict = limiter
            .acquire(&[Limit::new("k", two_per_hour())])
            .await
            .unwrap();
        assert!(verdict.is_allowed());
        assert!(verdict.degraded_by().is_some());
    }
}

#[tokio::test]
async fn fail_closed_denies_with_a_retry_after() {
    let (store, limiter) = setup(FailurePolicy::Closed);
    store.mode.store(NONSENSE, Ordering::Relaxed);
    let verdict = limiter
        .acquire(&[Limit::new("k", two_per_hour())])
        .await
        .unwrap();
    assert!(!verdict.is_allowed());
    assert_eq!(verdict.degraded_by(), Some(StoreFailure::BadReply));
    assert!(verdict.decision().unwrap().retry_after() > Duration::ZERO);
}

#[tokio::test]
async fn local_fallback_keeps_limiting() {
    let (store, limiter) = setup(FailurePolicy::LocalFallback);
    store.mode.store(DOWN, Ordering::Relaxed);
    let request = [Limit::new("k", two_per_hour())];
    assert!(limiter.acquire(&request).await.unwrap().is_allowed());
    assert!(limiter.acquire(&request).await.unwrap().is_allowed());
    let third = limiter.acquire(&request).await.unwrap();
    assert!(!third.is_allowed(), "the local fallback did not limit");
    assert!(third.degraded_by().is_some());
}

#[tokio::test]
async fn a_slow_store_costs_at_most_the_deadline_then_is_skipped() {
    let (store, limiter) = setup(FailurePolicy::Closed);
    store.mode.store(SLOW, Ordering::Relaxed);
    let started = Instant::now();
    let verdict = limiter
        .acquire(&[Limit::new("k", two_per_hour())])
        .await
        .unwrap();
    assert_eq!(verdict.degraded_by(), Some(StoreFailure::Timeout));
    // Generous against scheduling noise, far below the store's five seconds.
    assert!(started.elapsed() < Duration::from_secs(1));
    // The breaker is open: the next calls do not reach the store at all.
    let calls = store.calls.load(Ordering::Relaxed);
    for _ in 0..20 {
        let verdict = limiter
            .acquire(&[Limit::new("k", two_per_hour())])
            .await
            .unwrap();
        assert_eq!(verdict.degraded_by(), Some(StoreFailure::CircuitOpen));
    }
    assert_eq!(store.calls.load(Ordering::Relaxed), calls);
    assert!(!limiter.store_healthy());
}

#[tokio::test]
async fn decisions_go_back_to_the_store_when_it_recovers() {
    let (store, limiter) = setup(FailurePolicy::Closed);
    store.mode.store(DOWN, Ordering::Relaxed);
    let request = [Limit::new("k", two_per_hour())];
    assert!(
        limiter
            .acquire(&request)
            .await
            .unwrap()
            .degraded_by()
            .is_some()
    );
    store.mode.store(HEALTHY, Ordering::Relaxed);
    // Still within the cooldown: skipped.
    assert_eq!(
        limiter.acquire(&request).await.unwrap().degraded_by(),
        Some(StoreFailure::CircuitOpen)
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let verdict = limiter.acquire(&request).await.unwrap();
    assert_eq!(verdict.degraded_by(), None);
    assert!(verdict.is_allowed());
    assert!(limiter.store_healthy());
    // The store's own buckets decide again: one more, then denied.
    assert!(limiter.acquire(&request).await.unwrap().is_allowed());
    assert!(!limiter.acquire(&request).await.unwrap().is_allowed());
}

#[tokio::test]
async fn invalid_requests_are_errors_whatever_the_store() {
    let (store, limiter) = setup(FailurePolicy::Open);
    store.mode.store(DOWN, Ordering::Relaxed);
    let calls = store.calls.load(Ordering::Relaxed);
    assert_eq!(
        limiter
            .acquire(&[Limit::new("k", two_per_hour()).with_cost(3)])
            .await
            .unwrap_err(),
        RequestError::CostExceedsBurst { cost: 3, burst: 2 }
    );
    assert_eq!(
        limiter.acquire(&[]).await.unwrap_err(),
        RequestError::NoLimits
    );
    assert_eq!(
        store.calls.load(Ordering::Relaxed),
        calls,
        "invalid requests reached the store"
    );
}
