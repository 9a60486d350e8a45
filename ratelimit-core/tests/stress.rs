//! The bound on the real clock, under many threads and many tasks.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ratelimit_core::conformance::assert_bound;
use ratelimit_core::{
    KeyedLimiter, KeyedLimiterBuilder, Limit, MemoryStore, Policy, Store, TokenBucket,
};

const THREADS: usize = 8;
const RUN_FOR: Duration = Duration::from_millis(400);
const MAX_KEYS: usize = 1_024;

/// Runs `acquire` on THREADS threads for RUN_FOR; returns the (before, after) instants of every
/// admitted call, sorted.
fn hammer(check: impl Fn(usize) -> bool + Send + Sync + 'static) -> Vec<(Instant, Instant)> {
    let check = Arc::new(check);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (check, barrier) = (check.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut admitted = Vec::new();
                while start.elapsed() < RUN_FOR {
                    let before = Instant::now();
                    if check(thread) {
                        admitted.push((before, Instant::now()));
                    }
                }
                admitted
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all
}

/// The whole run's total within the bound. Only the upper side: how much is admitted on the real
/// clock depends on how busy the machine is, so under-admission is measured on the manual clock
/// (tests/bound.rs matches a reference bucket exactly) and in the benches.
fn assert_at_most_rate(admitted: usize, policy: &Policy) {
    let at_most = policy.max_admitted(RUN_FOR + Duration::from_millis(100)) as usize;
    assert!(
        admitted <= at_most,
        "{admitted} admitted, at most {at_most} allowed"
    );
}

#[test]
fn token_bucket_under_threads() {
    let policy = Policy::per_second(2_000).unwrap().with_burst(50).unwrap();
    let bucket = Arc::new(TokenBucket::new(policy));
    let admitted = hammer(move |_| bucket.acquire(1).unwrap().is_allowed());
    assert_at_most_rate(admitted.len(), &policy);
    assert_bound(&admitted, &policy);
}

#[test]
fn keyed_limiter_shared_key_under_threads() {
    let policy = Policy::per_second(2_000).unwrap().with_burst(50).unwrap();
    // A table far smaller than the keys the threads churn through: inserts, sweeps and evictions
    // race the shared key, which must neither get a fresh bucket nor push the table past its cap.
    // Keys other than the shared one stay in debt for an hour, so the table is full of active
    // keys from the start and every new one needs an eviction.
    let limiter: Arc<KeyedLimiter<String>> = Arc::new(
        KeyedLimiterBuilder::new(Policy::per_hour(1).unwrap())
            .max_keys(MAX_KEYS)
            .build(),
    );
    limiter.set_policy("shared".to_string(), policy);
    for i in 0..MAX_KEYS {
        assert!(
            limiter
                .acquire(format!("before-{i}").as_str(), 1)
                .unwrap()
                .is_allowed()
        );
    }
    let shared = limiter.clone();
    let admitted = hammer(move |thread| {
        let own = format!("own-{thread}-{}", fastrand_key());
        let _ = shared.acquire(own.as_str(), 1);
        shared.acquire("shared", 1).unwrap().is_allowed()
    });
    assert_at_most_rate(admitted.len(), &policy);
    assert_bound(&admitted, &policy);
    assert!(limiter.len() <= MAX_KEYS, "{} buckets held", limiter.len());
    assert!(limiter.evicted() > 0, "no eviction raced the shared key");
}

#[test]
fn memory_store_multi_limits_under_threads() {
    let global = Policy::per_second(2_000).unwrap().with_burst(50).unwrap();
    let per_thread = Policy::per_second(400).unwrap().with_burst(10).unwrap();
    let store = Arc::new(MemoryStore::new());
    let admitted = hammer(move |thread| {
        let own = format!("thread-{thread}");
        store
            .acquire_sync(&[Limit::new(&own, per_thread), Limit::new("global", global)])
            .unwrap() // the memory store always answers in process
            .unwrap()
            .is_allowed()
    });
    assert_bound(&admitted, &global);
    assert!(admitted.len() as u64 <= global.max_admitted(RUN_FOR + Duration::from_millis(100)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_under_many_tasks() {
    let policy = Policy::per_second(1_000).unwrap().with_burst(20).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut admitted = Vec::new();
                while start.elapsed() < RUN_FOR {
                    let before = Instant::now();
                    let verdict = store.acquire(&[Limit::new("k", policy)]).await.unwrap();
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
    assert_at_most_rate(admitted.len(), &policy);
    assert_bound(&admitted, &policy);
}

fn fastrand_key() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % 5_000
}
