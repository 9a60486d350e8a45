//! Waiting for a token: it arrives, cancelling loses nothing, and many waiters do not overrun the limit.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::conformance::assert_bound;
use ratelimit_core::{KeyedLimiter, Policy, TokenBucket};

#[tokio::test]
async fn until_ready_waits_for_the_next_token() {
    let bucket = TokenBucket::new(Policy::per_second(20).unwrap().with_burst(1).unwrap());
    bucket.acquire(1).unwrap();
    let started = Instant::now();
    let decision = bucket.until_ready(1).await.unwrap();
    assert!(decision.is_allowed());
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "admitted before the token was back"
    );
}

#[tokio::test]
async fn cancelling_a_wait_debits_nothing() {
    let bucket = TokenBucket::new(Policy::per_second(2).unwrap().with_burst(1).unwrap());
    bucket.acquire(1).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(50), bucket.until_ready(1)).await;
    assert!(waited.is_err(), "the wait should still be sleeping");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Had the cancelled wait taken the token, this would be denied.
    assert!(bucket.acquire(1).unwrap().is_allowed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_waiters_keep_the_bound() {
    let policy = Policy::per_second(100).unwrap().with_burst(1).unwrap();
    let limiter: Arc<KeyedLimiter<String>> = Arc::new(KeyedLimiter::new(policy));
    let waiters: Vec<_> = (0..30)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                limiter.until_ready("shared", 1).await.unwrap();
                (sent, Instant::now())
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for waiter in waiters {
        admitted.push(waiter.await.unwrap());
    }
    admitted.sort();
    assert_eq!(admitted.len(), 30, "every waiter was admitted in the end");
    assert_bound(&admitted, &policy);
    assert_eq!(
        limiter.until_ready("shared", 2).await.unwrap_err(),
        ratelimit_core::RequestError::CostExceedsBurst { cost: 2, burst: 1 }
    );
}
