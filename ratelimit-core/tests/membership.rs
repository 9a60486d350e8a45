//! Replicas counted in the store: three join and are counted by each; one leaves and the others
//! count two; a limiter follows the count (its fallback share and lease sizes divide by it), and
//! a bad period is a typed error. On the memory store here; the conformance suite runs
//! `membership_counts_the_replicas` on every store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::{Limiter, Membership, MembershipError, MemoryStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_follows_the_live_count_and_the_setting_stays_a_floor() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let period = Duration::from_millis(100);
    let members: Vec<Membership> = {
        let mut joined = Vec::new();
        for _ in 0..3 {
            joined.push(
                Membership::join(store.clone(), "floor", period)
                    .await
                    .unwrap(),
            );
        }
        joined
    };
    let low = Limiter::from_arc(store.clone())
        .with_replicas(1)
        .with_membership(&members[0]);
    let high = Limiter::from_arc(store.clone())
        .with_replicas(5)
        .with_membership(&members[0]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while low.replicas() != 3 {
        assert!(Instant::now() < deadline, "counted {}", low.replicas());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(high.replicas(), 5, "the setting is a floor");
    drop(members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_too_short_is_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let error = Membership::join(store, "short", Duration::from_millis(1))
        .await
        .unwrap_err();
    assert!(matches!(error, MembershipError::Period(_)), "{error}");
}
