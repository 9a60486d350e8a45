//! Several limiter replicas (each its own store and client) sharing keys in one table: together
//! they admit no more than one limiter would. They share one clock, so the skew slack is zero.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::conformance::{assert_bound, fresh_key};
use ratelimit_core::{Clock, Limit, MonotonicClock, Policy, Store};
use ratelimit_dynamodb::DynamoStore;

async fn replicas(endpoint: &str, count: usize) -> Vec<Arc<DynamoStore>> {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let mut stores = Vec::new();
    for _ in 0..count {
        let store = common::store(endpoint).await.with_clock(clock.clone());
        stores.push(Arc::new(store));
    }
    stores
}

/// `replicas × tasks` callers on one key for `run_for`; returns the admitted requests as
/// (sent, received), sorted, and the number of decisions made.
async fn hammer(
    stores: &[Arc<DynamoStore>],
    tasks: usize,
    key: &str,
    policy: Policy,
    run_for: Duration,
) -> (Vec<(Instant, Instant)>, u64) {
    let start = Instant::now();
    let mut handles = Vec::new();
    for store in stores {
        for _ in 0..tasks {
            let (store, key) = (store.clone(), key.to_string());
            handles.push(tokio::spawn(async move {
                let (mut admitted, mut decisions) = (Vec::new(), 0u64);
                while start.elapsed() < run_for {
                    let sent = Instant::now();
                    let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                    decisions += 1;
                    if verdict.is_allowed() {
                        admitted.push((sent, Instant::now()));
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                (admitted, decisions)
            }));
        }
    }
    let (mut admitted, mut decisions) = (Vec::new(), 0);
    for handle in handles {
        let (mine, made) = handle.await.unwrap();
        admitted.extend(mine);
        decisions += made;
    }
    admitted.sort();
    (admitted, decisions)
}

async fn shared_key_keeps_the_bound(endpoint: &str, count: usize, tasks: usize, policy: Policy) {
    let stores = replicas(endpoint, count).await;
    let key = fresh_key("replicas");
    let run_for = Duration::from_millis(2000);
    let start = Instant::now();
    let (admitted, decisions) = hammer(&stores, tasks, &key, policy, run_for).await;
    let elapsed = start.elapsed();
    let requests: u64 = stores.iter().map(|s| s.requests_sent()).sum();
    println!(
        "{count} replicas × {tasks} tasks: {} admitted of {decisions} decisions in {elapsed:?}, \
         {requests} DynamoDB requests ({:.2} per decision)",
        admitted.len(),
        requests as f64 / decisions as f64
    );
    // One shared clock: no skew, so the bound is checked with no slack at all.
    assert_bound(&admitted, &policy);
    let expected = policy.max_admitted(elapsed) as usize;
    assert!(
        admitted.len() * 10 >= expected * 7,
        "only {} of about {expected} admitted",
        admitted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_bound_on_dynalite() {
    let policy = Policy::per_second(40).unwrap().with_burst(8).unwrap();
    shared_key_keeps_the_bound(&common::dynalite_endpoint(), 4, 6, policy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_bound_on_moto() {
    // moto serves about a hundred requests a second: a small load.
    let policy = Policy::per_second(10).unwrap().with_burst(3).unwrap();
    shared_key_keeps_the_bound(&common::moto_endpoint(), 3, 2, policy).await;
}

/// Replicas taking a per-replica limit and a shared global one in each request: the global limit
/// keeps its bound, and a denial of the global limit leaves the per-replica limit as it was (key
/// by key on dynalite, which gives back; one transaction on moto): each per-replica key is debited
/// by exactly the requests admitted on it. Those keys refill one token in 36 s, far longer than the
/// test, so what they hold afterwards counts their debits.
async fn shared_global_limit(endpoint: &str, count: usize, global_rate: u32) {
    let stores = replicas(endpoint, count).await;
    let global = fresh_key("replicas-global");
    let global_policy = Policy::per_second(global_rate)
        .unwrap()
        .with_burst(4)
        .unwrap();
    let own_policy = Policy::per_hour(100).unwrap();
    let run_for = Duration::from_millis(1500);
    let start = Instant::now();
    let mut handles = Vec::new();
    for store in &stores {
        let (store, global) = (store.clone(), global.clone());
        handles.push(tokio::spawn(async move {
            let own = fresh_key("replicas-own");
            let mut admitted = Vec::new();
            while start.elapsed() < run_for {
                let sent = Instant::now();
                let verdict = store
                    .acquire(&[
                        Limit::new(&own, own_policy),
                        Limit::new(&global, global_policy),
                    ])
                    .await
                    .unwrap();
                if verdict.is_allowed() {
                    admitted.push((sent, Instant::now()));
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (own, admitted)
        }));
    }
    let mut all = Vec::new();
    for (handle, store) in handles.into_iter().zip(&stores) {
        let (own, mine) = handle.await.unwrap();
        assert_bound(&mine, &own_policy); // one task: already in send order
        // `remaining` of a peek is what is left after the peeked cost of 1.
        let left = store.peek(&[Limit::new(&own, own_policy)]).await.unwrap();
        let left = left.decision().unwrap();
        let debited = own_policy.burst() - u32::from(left.is_allowed()) - left.remaining();
        assert_eq!(
            debited as usize,
            mine.len(),
            "{endpoint}: a per-replica key was debited {debited} times for {} admitted requests: \
             a denial of the global limit kept its debit",
            mine.len()
        );
        all.extend(mine);
    }
    all.sort();
    assert_bound(&all, &global_policy);
    assert!(!all.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_global_limit_on_dynalite() {
    shared_global_limit(&common::dynalite_endpoint(), 4, 30).await;
    let store = common::dynalite().await;
    let (a, b) = (fresh_key("tx-a"), fresh_key("tx-b"));
    let policy = Policy::per_hour(5).unwrap();
    store
        .acquire(&[Limit::new(&a, policy), Limit::new(&b, policy)])
        .await
        .unwrap();
    assert!(
        !store.uses_transactions(),
        "dynalite has no TransactWriteItems, yet the store kept using it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_global_limit_on_moto() {
    shared_global_limit(&common::moto_endpoint(), 3, 8).await;
    let store = common::moto().await;
    let (a, b) = (fresh_key("tx-a"), fresh_key("tx-b"));
    let policy = Policy::per_hour(5).unwrap();
    store
        .acquire(&[Limit::new(&a, policy), Limit::new(&b, policy)])
        .await
        .unwrap();
    assert!(store.uses_transactions(), "moto has TransactWriteItems");
}
