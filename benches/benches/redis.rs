//! RedisStore next to the bare protocol, in one run: the store's `acquire`, the very same script
//! sent as a raw `EVALSHA` (same key and arguments, same kind of connection), and a `PING` round
//! trip, each from 1 and from 64 concurrent tasks. Needs Redis on 127.0.0.1:6379
//! (`scripts/services.sh up`), or `REDIS_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ratelimit_core::{Limit, Policy, Store};
use ratelimit_redis::RedisStore;
use redis::aio::ConnectionManager;

const KEY: &str = "bench:redis";

mod support;
use support::concurrently;

fn redis_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let policy = Policy::per_second(1_000_000)
        .unwrap()
        .with_burst(1_000_000)
        .unwrap();
    let (store, raw) = runtime.block_on(async {
        let store = RedisStore::connect(&url)
            .await
            .expect("Redis is not running: scripts/services.sh up");
        // Loads the script, so the raw EVALSHA below finds it cached.
        store.acquire(&[Limit::new(KEY, policy)]).await.unwrap();
        let raw = ConnectionManager::new(redis::Client::open(url.as_str()).unwrap())
            .await
            .unwrap();
        (Arc::new(store), raw)
    });
    let sha = store.decide_script_sha().to_string();
    let redis_key = store.redis_key(KEY);
    // The arguments the store sends for this policy: commit, interval and tolerance in µs, cost.
    let interval_us = policy.emission_interval_ns().div_ceil(1_000);
    let tolerance_us = interval_us * u64::from(policy.burst());

    for tasks in [1u64, 64] {
        let mut group = c.benchmark_group(format!("redis/{tasks}_tasks"));
        group
            .warm_up_time(Duration::from_millis(700))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30);
        let s = store.clone();
        group.bench_function("ratelimit_acquire", |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let s = s.clone();
                concurrently(tasks, iters, move |_| {
                    let s = s.clone();
                    async move {
                        let verdict = s.acquire(&[Limit::new(KEY, policy)]).await.unwrap();
                        assert!(verdict.is_allowed());
                    }
                })
            })
        });
        let (r, sha, key) = (raw.clone(), sha.clone(), redis_key.clone());
        group.bench_function("raw_evalsha", |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let (r, sha, key) = (r.clone(), sha.clone(), key.clone());
                concurrently(tasks, iters, move |_| {
                    let (mut r, sha, key) = (r.clone(), sha.clone(), key.clone());
                    async move {
                        let reply: Vec<i64> = redis::cmd("EVALSHA")
                            .arg(&sha)
                            .arg(1)
                            .arg(&key)
                            .arg(1)
                            .arg(interval_us)
                            .arg(tolerance_us)
                            .arg(1)
                            .query_async(&mut r)
                            .await
                            .unwrap();
                        assert_eq!(reply.first(), Some(&1));
                    }
                })
            })
        });
        let r = raw.clone();
        group.bench_function("ping", |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let r = r.clone();
                concurrently(tasks, iters, move |_| {
                    let mut r = r.clone();
                    async move {
                        let _: String = redis::cmd("PING").query_async(&mut r).await.unwrap();
                    }
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, redis_store);
criterion_main!(benches);
