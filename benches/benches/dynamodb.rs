//! DynamoStore next to the bare SDK, in one run: the store's `acquire` on a busy key, and the very
//! same conditional `UpdateItem` (same expressions, key and values) issued directly with the SDK,
//! from 1 and from 16 concurrent tasks, on dynalite and (1 task) on moto. Then the number of
//! DynamoDB requests per decision when several replicas contend for one key.
//!
//! The emulators' speed drifts by tens of percent over a run, more than the difference measured,
//! so the two contenders are interleaved: every task alternates a store call and a raw call, and
//! each contender times only its own calls. Time per decision is the summed latency of a
//! contender's calls divided by the number of calls and tasks.
//! Needs the emulators of `scripts/services.sh up` (or `DYNALITE_ENDPOINT` / `MOTO_ENDPOINT`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use criterion::{Criterion, criterion_group, criterion_main};
use ratelimit_core::{Clock, Limit, MonotonicClock, Policy, Store};
use ratelimit_dynamodb::{DynamoStore, create_table};

mod support;
use support::dynamo_client;

const TABLE: &str = "ratelimit_bench";
const KEY: &str = "bench:dynamodb";

/// `tasks` concurrent tasks make `iters` calls of `timed` between them, each followed by an
/// untimed call of `other`; returns the summed latency of the `timed` calls divided by `tasks`.
async fn interleaved<T, TF, O, OF>(tasks: u64, iters: u64, timed: T, other: O) -> Duration
where
    T: Fn() -> TF + Send + Sync + 'static,
    TF: Future<Output = ()> + Send,
    O: Fn() -> OF + Send + Sync + 'static,
    OF: Future<Output = ()> + Send,
{
    let (timed, other) = (Arc::new(timed), Arc::new(other));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (timed, other) = (timed.clone(), other.clone());
            let share = iters / tasks + u64::from(t < iters % tasks);
            tokio::spawn(async move {
                let mut spent = Duration::ZERO;
                for _ in 0..share {
                    let start = Instant::now();
                    timed().await;
                    spent += start.elapsed();
                    other().await;
                }
                spent
            })
        })
        .collect();
    let mut spent = Duration::ZERO;
    for handle in handles {
        spent += handle.await.unwrap();
    }
    spent / tasks as u32
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The store's write on a busy (partly spent) bucket, issued with the SDK alone.
async fn raw_update(client: &Client, item_key: &str, policy: &Policy) {
    let now = unix_nanos();
    let increment = policy.emission_interval_ns();
    let tolerance = policy.tolerance_ns();
    let output = client
        .update_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(item_key.to_string()))
        .update_expression("SET #tat = #tat + :inc, #exp = :exp")
        .condition_expression("attribute_type(#tat, :number) AND #tat > :now AND #tat <= :last")
        .expression_attribute_names("#tat", "tat")
        .expression_attribute_names("#exp", "expires_at")
        .expression_attribute_values(":inc", AttributeValue::N(increment.to_string()))
        .expression_attribute_values(
            ":exp",
            AttributeValue::N(((now + tolerance).div_ceil(1_000_000_000) + 1).to_string()),
        )
        .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
        .expression_attribute_values(
            ":last",
            AttributeValue::N((now + tolerance - increment).to_string()),
        )
        .expression_attribute_values(":number", AttributeValue::S("N".into()))
        .return_values(ReturnValue::UpdatedNew)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await
        .unwrap();
    assert!(output.attributes().is_some());
}

fn store_vs_sdk(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // One token an hour with a burst of a million: every decision in the run is an admission on a
    // spent bucket (the busy-key case), and the bucket never runs out.
    let policy = Policy::per_hour(1).unwrap().with_burst(1_000_000).unwrap();
    let emulators = [
        (
            "dynalite",
            std::env::var("DYNALITE_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8005".into()),
            vec![1u64, 16],
        ),
        (
            "moto",
            std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5005".into()),
            vec![1u64],
        ),
    ];
    for (name, endpoint, task_counts) in emulators {
        let (store, raw) = runtime.block_on(async {
            let raw = dynamo_client(&endpoint).await;
            create_table(&raw, TABLE)
                .await
                .expect("no DynamoDB emulator: scripts/services.sh up");
            let store = DynamoStore::connect(dynamo_client(&endpoint).await, TABLE)
                .await
                .unwrap();
            store.reset(KEY).await.unwrap();
            // The first admission makes the bucket spent; from then on both sides advance it.
            let verdict = store.acquire(&[Limit::new(KEY, policy)]).await.unwrap();
            assert!(verdict.is_allowed());
            (Arc::new(store), raw)
        });
        let item_key = store.item_key(KEY);
        for tasks in task_counts {
            let mut group = c.benchmark_group(format!("dynamodb_{name}/{tasks}_tasks"));
            group
                .warm_up_time(Duration::from_secs(2))
                .measurement_time(Duration::from_secs(4))
                .sample_size(15);
            let store_call = {
                let s = store.clone();
                move || {
                    let s = s.clone();
                    async move {
                        let verdict = s.acquire(&[Limit::new(KEY, policy)]).await.unwrap();
                        assert!(verdict.is_allowed());
                    }
                }
            };
            let raw_call = {
                let (r, key) = (raw.clone(), item_key.clone());
                move || {
                    let (r, key) = (r.clone(), key.clone());
                    async move { raw_update(&r, &key, &policy).await }
                }
            };
            let (own, other) = (store_call.clone(), raw_call.clone());
            group.bench_function("ratelimit_acquire", |b| {
                b.to_async(&runtime)
                    .iter_custom(|iters| interleaved(tasks, iters, own.clone(), other.clone()))
            });
            let (own, other) = (raw_call.clone(), store_call.clone());
            group.bench_function("raw_update_item", |b| {
                b.to_async(&runtime)
                    .iter_custom(|iters| interleaved(tasks, iters, own.clone(), other.clone()))
            });
            group.finish();
        }
        // The busy-key case costs one request per decision: check, rather than assume, it.
        let before = store.requests_sent();
        runtime.block_on(async {
            for _ in 0..100 {
                store.acquire(&[Limit::new(KEY, policy)]).await.unwrap();
            }
        });
        println!(
            "dynamodb_{name}/busy_key: {:.2} requests per decision",
            (store.requests_sent() - before) as f64 / 100.0
        );
        runtime.block_on(requests_per_decision(name, &endpoint));
    }
}

/// Four replicas (own clients, own hints, one clock) with four tasks each on one key whose limit
/// they exceed: how many DynamoDB requests a decision costs when they contend.
async fn requests_per_decision(name: &str, endpoint: &str) {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    let policy = Policy::per_second(50).unwrap().with_burst(10).unwrap();
    let key = format!("bench:contended:{}", unix_nanos());
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let store = DynamoStore::connect(dynamo_client(endpoint).await, TABLE)
            .await
            .unwrap()
            .with_clock(clock.clone());
        replicas.push(Arc::new(store));
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for store in &replicas {
        for _ in 0..4 {
            let (store, key) = (store.clone(), key.clone());
            handles.push(tokio::spawn(async move {
                let (mut decisions, mut admitted) = (0u64, 0u64);
                while start.elapsed() < Duration::from_secs(3) {
                    let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                    decisions += 1;
                    admitted += u64::from(verdict.is_allowed());
                }
                (decisions, admitted)
            }));
        }
    }
    let (mut decisions, mut admitted) = (0, 0);
    for handle in handles {
        let (d, a) = handle.await.unwrap();
        decisions += d;
        admitted += a;
    }
    let requests: u64 = replicas.iter().map(|s| s.requests_sent()).sum();
    println!(
        "dynamodb_{name}/contention: 4 replicas x 4 tasks on one key (50/s, burst 10) for 3 s: \
         {decisions} decisions ({admitted} admitted), {requests} DynamoDB requests, \
         {:.2} requests per decision",
        requests as f64 / decisions as f64
    );
}

criterion_group!(benches, store_vs_sdk);
criterion_main!(benches);
