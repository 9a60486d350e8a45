//! Connections that die quietly: the path to Redis turns into a blackhole (bytes accepted, nothing
//! answered, nothing closed), then a fresh path comes back. The store must notice by itself that
//! its connection is dead and replace it, behind a `Limiter` with its default deadline, which
//! abandons each call (drops it) long before the store's own timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Proxy;
use ratelimit_core::conformance::fresh_key;
use ratelimit_core::{DEFAULT_DEADLINE, Limit, Limiter, Policy};
use ratelimit_redis::RedisStore;

/// How long the store may take to recover once a fresh path exists. Generous on purpose: the
/// claim is that it recovers at all without help, and a busy machine must not fail it.
const RECOVERS_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_connection_is_replaced() {
    let proxy = Proxy::start(6379).await;
    let store = RedisStore::connect(&proxy.url()).await.unwrap();
    let limiter = Limiter::new(store.clone());
    assert_eq!(DEFAULT_DEADLINE, Duration::from_millis(50));
    let key = fresh_key("blackhole");
    let policy = Policy::per_second(1_000).unwrap();
    let request = [Limit::new(&key, policy)];

    let verdict = limiter.acquire(&request).await.unwrap();
    assert_eq!(
        verdict.degraded_by(),
        None,
        "Redis did not answer before the fault"
    );

    proxy.blackhole();
    // The failure policy answers while the path is dead; keep calling a while, as traffic would.
    let dead_until = Instant::now() + Duration::from_millis(1_500);
    let mut degraded = 0;
    while Instant::now() < dead_until {
        let verdict = limiter.acquire(&request).await.unwrap();
        degraded += u32::from(verdict.degraded_by().is_some());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(degraded > 0, "no call noticed the blackhole");

    proxy.restore();
    let restored = Instant::now();
    let mut calls = 0u32;
    loop {
        calls += 1;
        let verdict = limiter.acquire(&request).await.unwrap();
        if verdict.degraded_by().is_none() {
            break;
        }
        assert!(
            restored.elapsed() < RECOVERS_WITHIN,
            "no decision from Redis {RECOVERS_WITHIN:?} after a fresh path came back \
             ({calls} calls, {} connections replaced)",
            store.connections_replaced()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "recovered {:?} after the path came back, in {calls} calls ({} connections replaced)",
        restored.elapsed(),
        store.connections_replaced()
    );
    assert!(store.connections_replaced() >= 1);
}

/// The same without a `Limiter`: the store's own timeouts count, and a store left idle through
/// the fault recovers on the calls that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_alone_replaces_a_blackholed_connection() {
    let proxy = Proxy::start(6379).await;
    let store = RedisStore::connect(&proxy.url())
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    let key = fresh_key("blackhole-alone");
    let policy = Policy::per_second(1_000).unwrap();
    let request = [Limit::new(&key, policy)];
    use ratelimit_core::Store;
    store.acquire(&request).await.unwrap();
    proxy.blackhole();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let restored = Instant::now();
    let mut errors = 0u32;
    while store.acquire(&request).await.is_err() {
        errors += 1;
        assert!(
            restored.elapsed() < RECOVERS_WITHIN,
            "still failing {RECOVERS_WITHIN:?} after a fresh path came back ({errors} errors)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(errors >= 1, "the dead connection went unnoticed");
    assert!(store.connections_replaced() >= 1);
}
