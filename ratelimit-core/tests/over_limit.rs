//! The over-limit cache: a key the store denied is denied in process, with no store call, until
//! the store said it has room again. Bound: it never admits, so `burst + rate × w` holds as it
//! does without it; and a denied flood costs (about) one store call per retry-after.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ratelimit_core::conformance::assert_bound;
use ratelimit_core::{Limit, Limiter, MemoryStore, Policy, Store, StoreError, Verdict};

/// A real MemoryStore seen as a remote store (no in-process answer), counting the calls.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    calls: AtomicUsize,
}

#[async_trait]
impl Store for CountingStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire(limits).await
    }
    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.inner.peek(limits).await
    }
    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.inner.reset(key).await
    }
}

#[tokio::test]
async fn a_denied_flood_costs_one_store_call_per_retry_after() {
    let store = Arc::new(CountingStore::default());
    let limiter = Limiter::from_arc(store.clone());
    let policy = Policy::per_hour(5).unwrap();
    let mut admitted = 0;
    for _ in 0..10_000 {
        let verdict = limiter
            .acquire(&[Limit::new("flood", policy)])
            .await
            .unwrap();
        admitted += u32::from(verdict.is_allowed());
        if !verdict.is_allowed() {
            assert!(verdict.decision().unwrap().retry_after() > Duration::from_secs(60));
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(
        store.calls.load(Ordering::Relaxed),
        6,
        "5 admits and one denial"
    );
    assert_eq!(limiter.over_limit_hits(), 9_994);
    // Another key is not affected, and neither is a reset key.
    let other = limiter
        .acquire(&[Limit::new("other", policy)])
        .await
        .unwrap();
    assert!(other.is_allowed());
    limiter.reset("flood").await.unwrap();
    assert!(
        limiter
            .acquire(&[Limit::new("flood", policy)])
            .await
            .unwrap()
            .is_allowed()
    );
}

#[tokio::test]
async fn a_cheaper_request_is_still_asked_and_the_cache_can_be_turned_off() {
    let store = Arc::new(CountingStore::default());
    let limiter = Limiter::from_arc(store.clone());
    let policy = Policy::per_hour(5).unwrap();
    let key = "cheap";
    assert!(
        limiter
            .acquire(&[Limit::new(key, policy).with_cost(3)])
            .await
            .unwrap()
            .is_allowed()
    );
    // Two left: a cost of three is denied by the store, then from the cache.
    for _ in 0..3 {
        let v = limiter
            .acquire(&[Limit::new(key, policy).with_cost(3)])
            .await
            .unwrap();
        assert!(!v.is_allowed());
    }
    assert_eq!(store.calls.load(Ordering::Relaxed), 2);
    // A cost of two still fits: the store is asked and admits it.
    let v = limiter
        .acquire(&[Limit::new(key, policy).with_cost(2)])
        .await
        .unwrap();
    assert!(v.is_allowed());
    assert_eq!(store.calls.load(Ordering::Relaxed), 3);

    let uncached = Limiter::from_arc(store.clone()).with_over_limit_cache(0);
    let before = store.calls.load(Ordering::Relaxed);
    for _ in 0..10 {
        uncached.acquire(&[Limit::new(key, policy)]).await.unwrap();
    }
    assert_eq!(store.calls.load(Ordering::Relaxed) - before, 10);
    assert_eq!(uncached.over_limit_hits(), 0);
}

#[tokio::test]
async fn a_cached_key_goes_back_to_the_store_once_it_has_room() {
    let store = Arc::new(CountingStore::default());
    let limiter = Limiter::from_arc(store.clone());
    let policy = Policy::per_second(50).unwrap().with_burst(1).unwrap(); // room every 20 ms
    assert!(
        limiter
            .acquire(&[Limit::new("k", policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !limiter
            .acquire(&[Limit::new("k", policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if limiter
            .acquire(&[Limit::new("k", policy)])
            .await
            .unwrap()
            .is_allowed()
        {
            break;
        }
        assert!(Instant::now() < deadline, "never admitted again");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The bound on the real clock, 64 tasks on one key through the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bound_holds_through_the_cache_under_many_tasks() {
    let store = Arc::new(CountingStore::default());
    let limiter = Arc::new(Limiter::from_arc(store.clone()));
    let policy = Policy::per_second(1_000).unwrap().with_burst(20).unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut admitted = Vec::new();
                while start.elapsed() < Duration::from_millis(400) {
                    let before = Instant::now();
                    let verdict = limiter.acquire(&[Limit::new("hot", policy)]).await.unwrap();
                    if verdict.is_allowed() {
                        admitted.push((before, Instant::now()));
                    }
                    tokio::task::yield_now().await;
                }
                admitted
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for task in tasks {
        admitted.extend(task.await.unwrap());
    }
    admitted.sort();
    assert_bound(&admitted, &policy);
}
