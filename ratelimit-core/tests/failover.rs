//! Failing over without multiplying the limit: replicas on local buckets keep one global bound
//! between them, and one failed node of a store sends only its own keys to the failure policy.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use ratelimit_core::{
    FailurePolicy, Limit, Limiter, MemoryStore, Policy, Store, StoreError, StoreFailure, Verdict,
};

/// A real MemoryStore whose keys live on two "nodes" (by their first letter); node `b` can be
/// switched off, a fault a real cluster does not produce on demand.
#[derive(Default)]
struct TwoNodeStore {
    inner: MemoryStore,
    b_down: AtomicBool,
}

impl TwoNodeStore {
    fn check(&self, limits: &[Limit<'_>]) -> Result<(), StoreError> {
        let touches_b = limits.iter().any(|l| self.node_of(l.key) == 1);
        if touches_b && self.b_down.load(Ordering::Relaxed) {
            return Err(StoreError::unavailable("node b refused the connection"));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for TwoNodeStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.check(limits)?;
        self.inner.acquire(limits).await
    }
    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.check(limits)?;
        self.inner.peek(limits).await
    }
    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.inner.reset(key).await
    }
    fn node_of(&self, key: &str) -> usize {
        usize::from(key.starts_with('b'))
    }
}

/// Bound: `burst + rate × w` across all replicas together. Three replicas whose store is down
/// each decide on local buckets: with the replica count declared, each enforces a third of the
/// limit, and the three together admit no more than the limit. Without it they admitted 3×.
#[tokio::test]
async fn replicas_on_local_buckets_share_the_limit_instead_of_multiplying_it() {
    let policy = Policy::per_hour(30).unwrap();
    let store = Arc::new(TwoNodeStore::default());
    store.b_down.store(true, Ordering::Relaxed);
    let replicas: Vec<Limiter> = (0..3)
        .map(|_| {
            Limiter::from_arc(store.clone())
                .with_failure_policy(FailurePolicy::LocalFallback)
                .with_replicas(3)
        })
        .collect();
    let mut admitted = 0;
    for _ in 0..100 {
        for replica in &replicas {
            let verdict = replica
                .acquire(&[Limit::new("b:client", policy)])
                .await
                .unwrap();
            assert!(verdict.degraded_by().is_some());
            admitted += u64::from(verdict.is_allowed());
        }
    }
    // No refill to speak of in this test (one token every two minutes).
    assert!(
        admitted <= policy.max_admitted(std::time::Duration::from_secs(60)),
        "{admitted} admitted by three replicas on local buckets"
    );
    assert_eq!(admitted, 30, "each replica enforces its share");
}

/// A cost that fits the limit but not one replica's share is denied while the store is away,
/// never an error (an error would be admitted by callers that fail open).
#[tokio::test]
async fn a_cost_above_the_share_is_denied_not_an_error() {
    let store = Arc::new(TwoNodeStore::default());
    store.b_down.store(true, Ordering::Relaxed);
    let limiter = Limiter::from_arc(store).with_replicas(4);
    let verdict = limiter
        .acquire(&[Limit::new("b:client", Policy::per_hour(8).unwrap()).with_cost(5)])
        .await
        .unwrap();
    assert!(!verdict.is_allowed());
    assert!(verdict.degraded_by().is_some());
}

/// One breaker per node: node `b` failing sends `b`'s keys to the failure policy for the
/// cooldown, while `a`'s keys keep being decided by the store.
#[tokio::test]
async fn a_failed_node_does_not_trip_the_other_nodes() {
    let store = Arc::new(TwoNodeStore::default());
    let limiter = Limiter::from_arc(store.clone()).with_failure_policy(FailurePolicy::Closed);
    let policy = Policy::per_hour(100).unwrap();
    store.b_down.store(true, Ordering::Relaxed);
    let b = limiter.acquire(&[Limit::new("b:1", policy)]).await.unwrap();
    assert_eq!(b.degraded_by(), Some(StoreFailure::Unavailable));
    assert!(!limiter.store_healthy());
    // Within the cooldown: b's keys skip the store, a's keys are answered by it.
    let b = limiter.acquire(&[Limit::new("b:1", policy)]).await.unwrap();
    assert_eq!(b.degraded_by(), Some(StoreFailure::CircuitOpen));
    for _ in 0..5 {
        let a = limiter.acquire(&[Limit::new("a:1", policy)]).await.unwrap();
        assert_eq!(a.degraded_by(), None, "node a was tripped by node b");
        assert!(a.is_allowed());
    }
    // A request over both nodes is all-or-nothing: it follows the open breaker.
    let both = limiter
        .acquire(&[Limit::new("a:2", policy), Limit::new("b:2", policy)])
        .await
        .unwrap();
    assert_eq!(both.degraded_by(), Some(StoreFailure::CircuitOpen));
    assert!(!both.is_allowed());
}

/// A peek during an outage debits nothing, the local fallback included: a caller that peeks
/// before acquiring (the rate limit service does, for more than 16 limits) keeps its share.
#[tokio::test]
async fn a_peek_during_an_outage_debits_nothing() {
    let store = Arc::new(TwoNodeStore::default());
    store.b_down.store(true, Ordering::Relaxed);
    let limiter = Limiter::from_arc(store).with_failure_policy(FailurePolicy::LocalFallback);
    let policy = Policy::per_hour(3).unwrap();
    for _ in 0..10 {
        let peeked = limiter.peek(&[Limit::new("b:peek", policy)]).await.unwrap();
        assert!(peeked.is_allowed() && peeked.degraded_by().is_some());
    }
    let mut admitted = 0;
    for _ in 0..5 {
        let verdict = limiter
            .acquire(&[Limit::new("b:peek", policy)])
            .await
            .unwrap();
        admitted += u32::from(verdict.is_allowed());
    }
    assert_eq!(admitted, 3, "the peeks spent the fallback's tokens");
}
