//! `SCRIPT FLUSH` in a loop while 64 tasks decide on one key: not one call fails (a flush between
//! the store's reload and its retry must not surface as `NOSCRIPT`), and the key keeps its bound
//! over every window. On a server of the test's own, so that the flushes disturb no other test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{OwnRedis, redis_cli};
use ratelimit_core::conformance::{assert_bound, fresh_key};
use ratelimit_core::{Limit, Policy, Store};
use ratelimit_redis::RedisStore;

/// `errorstat_NOSCRIPT` of `INFO errorstats`: how many `NOSCRIPT` errors the server has answered.
async fn noscript_errors(port: u16) -> u64 {
    let info = redis_cli(port, &["info", "errorstats"]).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_NOSCRIPT:count="))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flush_in_a_loop_under_load() {
    let server = OwnRedis::start(6393).await;
    let store = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let key = Arc::new(fresh_key("flush-loop"));
    let policy = Policy::per_second(100).unwrap().with_burst(10).unwrap();
    let run_for = Duration::from_millis(2_000);

    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicU64::new(0));
    let flusher = {
        let (stop, flushes) = (stop.clone(), flushes.clone());
        let client = redis::Client::open(server.url()).unwrap();
        tokio::spawn(async move {
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                flushes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let (mut admitted, mut errors) = (Vec::new(), Vec::new());
            while start.elapsed() < run_for {
                let sent = Instant::now();
                match store.acquire(&[Limit::new(&key, policy)]).await {
                    Ok(verdict) if verdict.is_allowed() => admitted.push((sent, Instant::now())),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                    Err(error) => errors.push(error),
                }
            }
            (admitted, errors)
        }));
    }
    let (mut admitted, mut errors) = (Vec::new(), Vec::new());
    for task in tasks {
        let (mine, failed) = task.await.unwrap();
        admitted.extend(mine);
        errors.extend(failed);
    }
    stop.store(true, Ordering::Relaxed);
    flusher.await.unwrap();
    admitted.sort();

    let flushes = flushes.load(Ordering::Relaxed);
    let noscript = noscript_errors(server.port).await;
    println!(
        "{} admitted, {flushes} flushes, {noscript} NOSCRIPT answers, {} errors",
        admitted.len(),
        errors.len()
    );
    // The fault was there: the flushes made the server answer NOSCRIPT, many times.
    assert!(flushes >= 20, "only {flushes} flushes");
    assert!(noscript >= 20, "only {noscript} NOSCRIPT answers");
    assert!(
        errors.is_empty(),
        "{} calls failed, the first with {:?}",
        errors.len(),
        errors.first()
    );
    assert_bound(&admitted, &policy);
    assert!(
        admitted.len() as u64 > u64::from(policy.burst()),
        "only {} admitted",
        admitted.len()
    );
}
