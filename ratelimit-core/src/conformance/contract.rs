//! What one caller sees of the contract: bursts and denials, costs, typed errors, all or nothing,
//! peeks, resets, isolated keys and refills.
//!
//! Apart from the concurrent checks because these hold for any store at any speed, with no timing
//! but the refill's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use crate::error::{RequestError, StoreError};
use crate::policy::Policy;
use crate::store::{Limit, MAX_KEY_LEN, MAX_LIMITS, Store};

use super::{fresh_key, hourly};

/// A fresh key admits exactly its burst, counting `remaining` down, then denies with a wait of at
/// most one emission interval.
pub async fn burst_then_deny(store: Arc<dyn Store>) {
    let key = fresh_key("burst");
    let policy = hourly(5);
    for expected_remaining in (0..5).rev() {
        let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
        assert!(verdict.is_allowed(), "request within the burst was denied");
        let decision = verdict.decision().unwrap();
        assert_eq!(decision.limit(), 5);
        assert_eq!(decision.remaining(), expected_remaining);
        assert_eq!(decision.retry_after(), Duration::ZERO);
    }
    let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(!verdict.is_allowed(), "request past the burst was admitted");
    let decision = verdict.decision().unwrap();
    assert_eq!(decision.remaining(), 0);
    assert!(decision.retry_after() > Duration::ZERO);
    assert!(decision.retry_after() <= policy.emission_interval());
    assert!(decision.reset_after() <= policy.emission_interval() * 5);
    assert!(decision.reset_after() > policy.emission_interval() * 4);
}

/// A request's cost is debited whole, and a cost that does not fit is denied without debiting.
pub async fn cost_is_debited(store: Arc<dyn Store>) {
    let key = fresh_key("cost");
    let policy = hourly(5);
    let first = store
        .acquire(&[Limit::new(&key, policy).with_cost(3)])
        .await
        .unwrap();
    assert!(first.is_allowed());
    assert_eq!(first.decision().unwrap().remaining(), 2);
    let second = store
        .acquire(&[Limit::new(&key, policy).with_cost(3)])
        .await
        .unwrap();
    assert!(!second.is_allowed(), "cost 3 admitted with 2 left");
    assert_eq!(second.decision().unwrap().remaining(), 2);
    let third = store
        .acquire(&[Limit::new(&key, policy).with_cost(2)])
        .await
        .unwrap();
    assert!(
        third.is_allowed(),
        "the denied cost-3 request debited something"
    );
    assert_eq!(third.decision().unwrap().remaining(), 0);
}

/// Invalid requests are typed errors, the same from every store: a cost that can never fit, no
/// limits, too many limits, an empty, oversized or repeated key, a zero cost.
pub async fn invalid_requests_are_typed_errors(store: Arc<dyn Store>) {
    let key = fresh_key("invalid");
    let policy = hourly(5);
    let request_error = |result: Result<_, StoreError>| match result {
        Err(StoreError::Request(error)) => error,
        other => panic!("expected a request error, got {other:?}"),
    };
    assert_eq!(
        request_error(
            store
                .acquire(&[Limit::new(&key, policy).with_cost(6)])
                .await
        ),
        RequestError::CostExceedsBurst { cost: 6, burst: 5 }
    );
    assert_eq!(
        request_error(
            store
                .acquire(&[Limit::new(&key, policy).with_cost(0)])
                .await
        ),
        RequestError::ZeroCost
    );
    assert_eq!(
        request_error(store.acquire(&[]).await),
        RequestError::NoLimits
    );
    assert_eq!(
        request_error(store.acquire(&[Limit::new("", policy)]).await),
        RequestError::EmptyKey
    );
    let long = "k".repeat(MAX_KEY_LEN + 1);
    assert_eq!(
        request_error(store.acquire(&[Limit::new(&long, policy)]).await),
        RequestError::KeyTooLong {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        }
    );
    assert_eq!(
        request_error(
            store
                .acquire(&[Limit::new(&key, policy), Limit::new(&key, policy)])
                .await
        ),
        RequestError::DuplicateKey { position: 1 }
    );
    let keys: Vec<String> = (0..=MAX_LIMITS).map(|i| format!("{key}:{i}")).collect();
    let many: Vec<Limit<'_>> = keys.iter().map(|k| Limit::new(k, policy)).collect();
    assert_eq!(
        request_error(store.acquire(&many).await),
        RequestError::TooManyLimits {
            count: MAX_LIMITS + 1,
            max: MAX_LIMITS
        }
    );
    assert_eq!(
        request_error(store.peek(&[Limit::new(&key, policy).with_cost(6)]).await),
        RequestError::CostExceedsBurst { cost: 6, burst: 5 }
    );
    // None of the refused requests touched the bucket.
    let verdict = store
        .peek(&[Limit::new(&key, policy).with_cost(5)])
        .await
        .unwrap();
    assert!(verdict.is_allowed(), "a refused request debited the bucket");
}

/// When one limit denies, no limit is debited; each decision says what its limit alone said.
pub async fn all_or_nothing(store: Arc<dyn Store>) {
    let wide = fresh_key("aon-wide");
    let narrow = fresh_key("aon-narrow");
    let request = [
        Limit::new(&wide, hourly(10)),
        Limit::new(&narrow, hourly(1)),
    ];
    let first = store.acquire(&request).await.unwrap();
    assert!(first.is_allowed());
    assert_eq!(first.decisions()[0].remaining(), 9);
    assert_eq!(first.decisions()[1].remaining(), 0);
    for _ in 0..3 {
        let denied = store.acquire(&request).await.unwrap();
        assert!(!denied.is_allowed(), "the narrow limit was exceeded");
        assert!(
            denied.decisions()[0].is_allowed(),
            "the wide limit alone admits"
        );
        assert!(!denied.decisions()[1].is_allowed());
        assert!(denied.decision().unwrap().retry_after() > Duration::ZERO);
    }
    // The wide limit still holds 9: the denied requests debited nothing from it.
    let nine = store
        .peek(&[Limit::new(&wide, hourly(10)).with_cost(9)])
        .await
        .unwrap();
    assert!(nine.is_allowed(), "a denied request debited the wide limit");
    let ten = store
        .peek(&[Limit::new(&wide, hourly(10)).with_cost(10)])
        .await
        .unwrap();
    assert!(!ten.is_allowed(), "the admitted request was not debited");
}

/// Peek answers what acquire would, and consumes nothing.
pub async fn peek_consumes_nothing(store: Arc<dyn Store>) {
    let key = fresh_key("peek");
    let policy = hourly(4);
    let fresh = store.peek(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(fresh.is_allowed());
    assert_eq!(fresh.decision().unwrap().remaining(), 3);
    store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    for _ in 0..5 {
        let peeked = store.peek(&[Limit::new(&key, policy)]).await.unwrap();
        assert!(peeked.is_allowed());
        assert_eq!(peeked.decision().unwrap().remaining(), 2);
    }
    let too_much = store
        .peek(&[Limit::new(&key, policy).with_cost(4)])
        .await
        .unwrap();
    assert!(!too_much.is_allowed());
    let acquired = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert_eq!(acquired.decision().unwrap().remaining(), 2);
}

/// Reset fills a bucket up again.
pub async fn reset_refills(store: Arc<dyn Store>) {
    let key = fresh_key("reset");
    let policy = hourly(2);
    for _ in 0..2 {
        assert!(
            store
                .acquire(&[Limit::new(&key, policy)])
                .await
                .unwrap()
                .is_allowed()
        );
    }
    assert!(
        !store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    store.reset(&key).await.unwrap();
    let after = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(after.is_allowed());
    assert_eq!(after.decision().unwrap().remaining(), 1);
    // Resetting a key that has no state is fine.
    store.reset(&fresh_key("reset-unknown")).await.unwrap();
}

/// Exhausting one key leaves every other key untouched.
pub async fn keys_are_isolated(store: Arc<dyn Store>) {
    let a = fresh_key("iso-a");
    let b = fresh_key("iso-b");
    let policy = hourly(1);
    assert!(
        store
            .acquire(&[Limit::new(&a, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !store
            .acquire(&[Limit::new(&a, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    let other = store.acquire(&[Limit::new(&b, policy)]).await.unwrap();
    assert!(
        other.is_allowed(),
        "another key's exhaustion leaked into this one"
    );
}

/// Tokens come back at the policy's rate: a denied request is admitted after its retry-after.
pub async fn tokens_refill_over_time(store: Arc<dyn Store>) {
    let key = fresh_key("refill");
    let policy = Policy::per_second(10).unwrap().with_burst(1).unwrap();
    assert!(
        store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    let denied = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(!denied.is_allowed());
    let wait = denied.decision().unwrap().retry_after();
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
    tokio::time::sleep(wait + Duration::from_millis(30)).await;
    let later = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(
        later.is_allowed(),
        "no token came back after the retry-after"
    );
}
