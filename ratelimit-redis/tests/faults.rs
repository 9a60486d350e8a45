//! Faults a real server can be put through: killed mid-load and restarted, paused, its script cache
//! flushed, and its keys holding state that makes no sense.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{OwnRedis, redis_cli};
use ratelimit_core::conformance::fresh_key;
use ratelimit_core::{FailurePolicy, Limit, Limiter, Policy, Store, StoreError};
use ratelimit_redis::RedisStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_then_restarted() {
    let mut server = OwnRedis::start(6391).await;
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let limiter = Arc::new(
        Limiter::new(store)
            .with_failure_policy(FailurePolicy::LocalFallback)
            .with_deadline(Duration::from_millis(100))
            .with_cooldown(Duration::from_millis(200)),
    );
    let policy = Policy::per_second(1_000).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (from_store, degraded) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (limiter, stop) = (limiter.clone(), stop.clone());
        let (from_store, degraded) = (from_store.clone(), degraded.clone());
        workers.push(tokio::spawn(async move {
            let key = format!("load:{worker}");
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let verdict = limiter.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                slowest = slowest.max(started.elapsed());
                let counter = if verdict.degraded_by().is_some() {
                    &degraded
                } else {
                    &from_store
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            slowest
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        from_store.load(Ordering::Relaxed) > 0,
        "no decision came from Redis"
    );

    server.kill().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        degraded.load(Ordering::Relaxed) > 0,
        "the failure policy never decided"
    );

    server.restart().await;
    // Decisions go back to Redis once the breaker's probe succeeds.
    let back_at = from_store.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while from_store.load(Ordering::Relaxed) == back_at {
        assert!(
            Instant::now() < deadline,
            "decisions did not go back to Redis after its restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(limiter.store_healthy());
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let slowest = worker.await.unwrap();
        // No call waited much past the deadline, even while Redis was gone.
        assert!(
            slowest < Duration::from_millis(600),
            "a call took {slowest:?}"
        );
    }
}

#[tokio::test]
async fn a_paused_server_is_a_timeout() {
    let server = OwnRedis::start(6392).await;
    let store = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    let policy = Policy::per_hour(5).unwrap();
    assert!(
        store
            .acquire(&[Limit::new("k", policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    redis_cli(server.port, &["client", "pause", "1000"])
        .await
        .unwrap();
    let started = Instant::now();
    let error = store.acquire(&[Limit::new("k", policy)]).await.unwrap_err();
    assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn the_script_is_loaded_again_after_script_flush() {
    let store = common::standalone().await;
    let key = fresh_key("flush");
    let policy = Policy::per_hour(3).unwrap();
    let first = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert_eq!(first.decision().unwrap().remaining(), 2);
    for _ in 0..2 {
        redis_cli(6379, &["script", "flush"]).await.unwrap();
        let exists = redis_cli(6379, &["script", "exists", store.decide_script_sha()])
            .await
            .unwrap();
        assert_eq!(exists.trim(), "0", "the flush did not drop the script");
        let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
        assert!(verdict.is_allowed());
    }
    // The state survived the flushes: three admitted, the fourth denied.
    assert!(
        !store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
}

#[tokio::test]
async fn state_that_makes_no_sense_is_a_bad_reply() {
    let store = common::standalone().await;
    let policy = Policy::per_hour(3).unwrap();
    for (name, setup) in [
        ("text", vec!["set", "{key}", "not-a-number"]),
        ("fraction", vec!["set", "{key}", "12.5"]),
        ("negative", vec!["set", "{key}", "-40"]),
        ("list", vec!["rpush", "{key}", "x"]),
    ] {
        let key = fresh_key(&format!("nonsense-{name}"));
        let redis_key = store.redis_key(&key);
        let args: Vec<&str> = setup
            .iter()
            .map(|a| if *a == "{key}" { redis_key.as_str() } else { a })
            .collect();
        redis_cli(6379, &args).await.unwrap();
        let error = store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::BadReply(_)),
            "{name}: {error:?}"
        );
        // Nothing was overwritten: the bad state is still there for an operator to see.
        let kind = redis_cli(6379, &["type", &redis_key]).await.unwrap();
        assert_ne!(kind.trim(), "none", "{name}: the bad key vanished");
        redis_cli(6379, &["del", &redis_key]).await.unwrap();
    }
}

#[tokio::test]
async fn keys_expire_when_their_bucket_is_full_again() {
    let store = common::standalone().await;
    let key = fresh_key("ttl");
    // 10 a second, burst 5: after 3 requests the bucket is full again 300 ms later.
    let policy = Policy::per_second(10).unwrap().with_burst(5).unwrap();
    for _ in 0..3 {
        store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    }
    let ttl: i64 = redis_cli(6379, &["pttl", &store.redis_key(&key)])
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (200..=300).contains(&ttl),
        "pttl {ttl} ms, expected about 300"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let exists = redis_cli(6379, &["exists", &store.redis_key(&key)])
        .await
        .unwrap();
    assert_eq!(exists.trim(), "0", "the full bucket is still in Redis");
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let error = RedisStore::connect("redis://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let error = RedisStore::connect("not a url").await.unwrap_err();
    assert!(!matches!(error, StoreError::Timeout(_)), "{error:?}");
}

#[tokio::test]
async fn a_prefix_cannot_carry_a_hash_tag() {
    let store = common::standalone().await;
    assert!(matches!(
        store.with_prefix("rl:{x}:"),
        Err(StoreError::Misconfigured(_))
    ));
}
