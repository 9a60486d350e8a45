//! The bound under concurrent callers: one key, and several limits sharing one.
//!
//! Apart because these measure windows on the real clock, and a slow store runs them with fewer
//! callers (`few_concurrent_callers_keep_the_bound`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::Policy;
use crate::store::{Limit, Store};

use super::{assert_bound, fresh_key, hourly};

/// Many concurrent callers (32) on one key admit, over every window, at most
/// `burst + rate × window`, and not much less over the whole run.
pub async fn concurrent_callers_keep_the_bound(store: Arc<dyn Store>) {
    callers_keep_the_bound(store, 32).await;
}

/// [`concurrent_callers_keep_the_bound`] with 8 callers, for stores that serve only a few hundred
/// requests a second: with 32, each request would wait a quarter of a second in the store's queue
/// and be judged on time that old, and the check would measure the queue, not the store.
pub async fn few_concurrent_callers_keep_the_bound(store: Arc<dyn Store>) {
    callers_keep_the_bound(store, 8).await;
}

async fn callers_keep_the_bound(store: Arc<dyn Store>, callers: usize) {
    let key = Arc::new(fresh_key("bound"));
    let policy = Policy::per_second(20).unwrap().with_burst(5).unwrap();
    let run_for = Duration::from_millis(1500);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut admitted = Vec::new();
            while start.elapsed() < run_for {
                let sent = Instant::now();
                let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                if verdict.is_allowed() {
                    admitted.push((sent, Instant::now()));
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            admitted
        }));
    }
    let mut admitted = Vec::new();
    for task in tasks {
        admitted.extend(task.await.unwrap());
    }
    admitted.sort();
    // The bound only: how much a store admits on the real clock depends on how busy the machine
    // is, so under-admission is measured on a manual clock (ratelimit-core/tests/bound.rs) and in
    // the benches, never asserted here.
    assert_bound(&admitted, &policy);
}

/// Concurrent multi-limit requests sharing one global limit: the global limit is never exceeded,
/// and every limit is debited by exactly the admitted requests (a denial debits nothing anywhere).
pub async fn concurrent_all_or_nothing(store: Arc<dyn Store>) {
    let global = Arc::new(fresh_key("multi-global"));
    let global_policy = hourly(20);
    let own_policy = hourly(3);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let (store, global) = (store.clone(), global.clone());
        tasks.push(tokio::spawn(async move {
            let own = fresh_key(&format!("multi-own-{task}"));
            let mut admitted = 0u32;
            for _ in 0..6 {
                let verdict = store
                    .acquire(&[
                        Limit::new(&own, own_policy),
                        Limit::new(&global, global_policy),
                    ])
                    .await
                    .unwrap();
                admitted += u32::from(verdict.is_allowed());
            }
            (own, admitted)
        }));
    }
    let mut total = 0;
    for task in tasks {
        let (own, admitted) = task.await.unwrap();
        assert!(admitted <= 3, "a per-task limit of 3 admitted {admitted}");
        total += admitted;
        let left = store.peek(&[Limit::new(&own, own_policy)]).await.unwrap();
        let left = left.decision().unwrap();
        let expected_left = 3 - admitted;
        // `remaining` of a peek is what is left after the peeked cost of 1.
        assert_eq!(
            u32::from(left.is_allowed()) + left.remaining(),
            expected_left,
            "a limit was debited by a request that was not admitted"
        );
    }
    assert!(total <= 20, "the global limit of 20 admitted {total}");
    assert!(
        total >= 20,
        "only {total} admitted though 48 per-task tokens were offered"
    );
    let global_left = store
        .peek(&[Limit::new(&global, global_policy)])
        .await
        .unwrap();
    assert!(
        !global_left.is_allowed(),
        "the global limit was not debited"
    );
}
