//! A store in trouble, through the layer: the limiter's failure policy answers within its deadline.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ratelimit_core::{FailurePolicy, Limit, Limiter, Policy, Store, StoreError, Verdict};
use ratelimit_tower::{KeyExtractor, RateLimitLayer, Rule};

/// A store that never answers: the one fault a real server cannot be made to show on demand here
/// (the Redis crate's tests kill and pause real servers).
struct Hanging;

#[async_trait]
impl Store for Hanging {
    async fn acquire(&self, _: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        std::future::pending().await
    }
    async fn peek(&self, _: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        std::future::pending().await
    }
    async fn reset(&self, _: &str) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

async fn run(policy: FailurePolicy) -> (Vec<u16>, Duration, u64) {
    let limiter = Limiter::new(Hanging)
        .with_failure_policy(policy)
        .with_deadline(Duration::from_millis(50));
    let rule = Rule::new("per-ip", KeyExtractor::PeerIp, Policy::per_hour(2).unwrap());
    let layer = RateLimitLayer::builder(Arc::new(limiter))
        .rule(rule)
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = common::serve_axum(layer).await;
    let client = common::http1();
    let started = Instant::now();
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            client
                .get(format!("http://{addr}/api/hello"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    let errors = handle
        .counters("per-ip")
        .unwrap()
        .store_errors
        .load(Ordering::Relaxed);
    (codes, started.elapsed(), errors)
}

#[tokio::test]
async fn failure_policies_through_the_layer() {
    let (codes, elapsed, errors) = run(FailurePolicy::Open).await;
    assert_eq!(codes, [200; 4]);
    assert_eq!(errors, 4);
    // One deadline, then the breaker skips the store: far below four hanging calls.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let (codes, _, _) = run(FailurePolicy::Closed).await;
    assert_eq!(codes, [429; 4]);
    let (codes, _, _) = run(FailurePolicy::LocalFallback).await;
    assert_eq!(codes, [200, 200, 429, 429]);
}
