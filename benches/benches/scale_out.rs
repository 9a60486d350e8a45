//! Scaling out without a store round trip per decision (issue 16), side by side in one run, per
//! store: decisions per second and store operations per decision, for three workloads and three
//! modes of `Limiter`.
//!
//! Stores: memory, Redis (127.0.0.1:6379 or `REDIS_URL`), Redis Cluster (127.0.0.1:7000-7002 or
//! `REDIS_CLUSTER_NODES`), and dynalite (127.0.0.1:8005 or `DYNALITE_ENDPOINT`); start them with
//! `scripts/services.sh up`.
//!
//! Workloads, each on fresh keys:
//! - `hot_admitting`: one key whose limit is far above the offered load (every request fits);
//! - `denied_flood`: one key whose bucket was emptied before the run (every request is denied);
//! - `10k_keys`: 10,000 keys visited in turn, each far below its limit (the cold path).
//!
//! Modes, each with three `Limiter`s over one store (`with_replicas(3)`), the requests of 32 tasks
//! spread over them:
//! - `per_decision`: over-limit cache off, no leases: one store call per decision (today's path);
//! - `over_limit_cache`: the default over-limit cache, no leases;
//! - `leases`: the default over-limit cache and `with_leases` (see [`lease_config`]).
//!
//! Store operations are counted by a wrapper `Store` around the real one. It forwards `acquire`,
//! `peek`, `reset`, `node_of` and `resolution_ns`, but not `acquire_sync`: the memory store then
//! takes the same path through the limiter as a network store (at no latency), so its rows show
//! the limiter's own cost of each mode. (A bare `MemoryStore` answers in process through
//! `acquire_sync` and never reaches the over-limit cache; `core` benches that path.)
//!
//! After each case the bench prints its decisions, admissions, store operations per decision and
//! lease statistics, counted over the whole case (warm-up included, so lease ramp-up counts), and
//! at the end a table of them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use ratelimit_core::{
    LeaseConfig, Limit, Limiter, MemoryStore, Policy, Store, StoreError, Verdict,
};
use ratelimit_dynamodb::{DynamoStore, create_table};
use ratelimit_redis::RedisStore;

/// Concurrent tasks per case, spread over the replicas.
const TASKS: u64 = 32;
/// Limiters per case, over one store.
const REPLICAS: u32 = 3;
/// Keys of the cold-path workload.
const KEYS: usize = 10_000;
mod support;
use support::dynamo_client;

const TABLE: &str = "ratelimit_bench";

/// A store that counts the operations it forwards.
struct Counting {
    inner: Arc<dyn Store>,
    ops: AtomicU64,
}

#[async_trait]
impl Store for Counting {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire(limits).await
    }

    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.inner.peek(limits).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.inner.reset(key).await
    }

    // `acquire_sync` is deliberately not forwarded: see the module's documentation.

    fn resolution_ns(&self) -> u64 {
        self.inner.resolution_ns()
    }

    fn node_of(&self, key: &str) -> usize {
        self.inner.node_of(key)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    HotAdmitting,
    DeniedFlood,
    ManyKeys,
}

impl Workload {
    const ALL: [Workload; 3] = [
        Workload::HotAdmitting,
        Workload::DeniedFlood,
        Workload::ManyKeys,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::HotAdmitting => "hot_admitting",
            Workload::DeniedFlood => "denied_flood",
            Workload::ManyKeys => "10k_keys",
        }
    }

    fn policy(self) -> Policy {
        match self {
            // A million a second (the finest rate Redis counts) with a burst of 50 million: no
            // request of the run is denied, on any store, in any mode.
            Workload::HotAdmitting | Workload::ManyKeys => Policy::per_second(1_000_000)
                .unwrap()
                .with_burst(50_000_000)
                .unwrap(),
            // One token an hour, bursts of 100, emptied before the run: every request is denied
            // for the whole run, and the store says so with a retry-after of about an hour.
            Workload::DeniedFlood => Policy::per_hour(1).unwrap().with_burst(100).unwrap(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    PerDecision,
    OverLimitCache,
    Leases,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::PerDecision, Mode::OverLimitCache, Mode::Leases];

    fn name(self) -> &'static str {
        match self {
            Mode::PerDecision => "per_decision",
            Mode::OverLimitCache => "over_limit_cache",
            Mode::Leases => "leases",
        }
    }
}

/// What an operator would set for these keys: a slack of 300 tokens over the bound (100 per
/// replica, so one store call per 100 decisions at most on a hot key), leases living 1 s, the
/// default smallest lease (2) and table size (4,096 keys).
fn lease_config() -> LeaseConfig {
    LeaseConfig::new(300, Duration::from_secs(1))
}

/// One store under test.
struct StoreUnderTest {
    name: &'static str,
    inner: Arc<dyn Store>,
    /// The DynamoDB store again, for its own request count.
    dynamo: Option<Arc<DynamoStore>>,
    warm_up: Duration,
    measurement: Duration,
}

/// The counts of one case, over all its iterations.
#[derive(Default)]
struct Stats {
    decisions: AtomicU64,
    admitted: AtomicU64,
    degraded: AtomicU64,
}

/// One case: three limiters over one counting store, and the keys they are asked about.
struct Case {
    limiters: Vec<Limiter>,
    keys: Vec<String>,
    policy: Policy,
    /// Where the next batch of decisions starts in `keys`: every sample carries on from the last,
    /// so the 10,000 keys are visited in turn over the whole case, not the first few again.
    cursor: AtomicU64,
    stats: Stats,
}

/// `TASKS` tasks make `iters` decisions between them, task `t` on replica `t % REPLICAS`, the
/// `i`-th decision of task `t` on key `(cursor + i × TASKS + t) mod keys`; returns the wall time.
async fn run(case: Arc<Case>, iters: u64) -> Duration {
    let base = case.cursor.fetch_add(iters, Ordering::Relaxed);
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let case = case.clone();
            let share = iters / TASKS + u64::from(t < iters % TASKS);
            tokio::spawn(async move {
                let limiter = &case.limiters[(t % u64::from(REPLICAS)) as usize];
                let (mut admitted, mut degraded) = (0u64, 0u64);
                for i in 0..share {
                    let index = (base + i * TASKS + t) % case.keys.len() as u64;
                    let key = &case.keys[index as usize];
                    let verdict = limiter
                        .acquire(&[Limit::new(key, case.policy)])
                        .await
                        .unwrap();
                    admitted += u64::from(verdict.is_allowed());
                    degraded += u64::from(verdict.degraded_by().is_some());
                }
                // Counted once per task, so the counters cost no contended write per decision.
                let stats = &case.stats;
                stats.decisions.fetch_add(share, Ordering::Relaxed);
                stats.admitted.fetch_add(admitted, Ordering::Relaxed);
                stats.degraded.fetch_add(degraded, Ordering::Relaxed);
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

/// A line of the closing table.
struct Row {
    group: String,
    mode: &'static str,
    decisions: u64,
    admitted: u64,
    degraded: u64,
    ops_per_decision: f64,
    dynamo_requests_per_decision: Option<f64>,
    lease_fetches: u64,
    lease_hits: u64,
    over_limit_hits: u64,
}

/// A per-decision ratio: four decimals, or two significant digits when smaller than that shows
/// (a denied flood costs a few operations in tens of millions of decisions).
fn ratio(value: f64) -> String {
    if value > 0.0 && value < 0.001 {
        format!("{value:.1e}")
    } else {
        format!("{value:.4}")
    }
}

async fn stores() -> Vec<StoreUnderTest> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cluster_nodes: Vec<String> = std::env::var("REDIS_CLUSTER_NODES")
        .map(|nodes| nodes.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| {
            (7000..=7002)
                .map(|port| format!("redis://127.0.0.1:{port}"))
                .collect()
        });
    let cluster_nodes: Vec<&str> = cluster_nodes.iter().map(String::as_str).collect();
    let dynalite =
        std::env::var("DYNALITE_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8005".into());

    let redis = RedisStore::connect(&redis_url)
        .await
        .expect("Redis is not running: scripts/services.sh up");
    let cluster = RedisStore::connect_cluster(&cluster_nodes)
        .await
        .expect("Redis Cluster is not running: scripts/services.sh up");
    create_table(&dynamo_client(&dynalite).await, TABLE)
        .await
        .expect("dynalite is not running: scripts/services.sh up");
    let dynamo = Arc::new(
        DynamoStore::connect(dynamo_client(&dynalite).await, TABLE)
            .await
            .unwrap(),
    );
    let fast = (Duration::from_millis(700), Duration::from_secs(2));
    vec![
        StoreUnderTest {
            name: "memory",
            inner: Arc::new(MemoryStore::new()),
            dynamo: None,
            warm_up: fast.0,
            measurement: fast.1,
        },
        StoreUnderTest {
            name: "redis",
            inner: Arc::new(redis),
            dynamo: None,
            warm_up: fast.0,
            measurement: fast.1,
        },
        StoreUnderTest {
            name: "redis_cluster",
            inner: Arc::new(cluster),
            dynamo: None,
            warm_up: fast.0,
            measurement: fast.1,
        },
        StoreUnderTest {
            name: "dynamodb_dynalite",
            inner: dynamo.clone(),
            dynamo: Some(dynamo),
            // A call is about a millisecond: a longer window, still 10 samples.
            warm_up: Duration::from_secs(1),
            measurement: Duration::from_secs(3),
        },
    ]
}

/// Three limiters in `mode` over `store`, on fresh keys for `workload` (emptied for the flood).
async fn case(store: &Arc<Counting>, workload: Workload, mode: Mode, run_id: u64) -> Case {
    let prefix = format!("scale_out:{run_id}:{}:{}", workload.name(), mode.name());
    let keys: Vec<String> = match workload {
        Workload::HotAdmitting | Workload::DeniedFlood => vec![format!("{prefix}:hot")],
        Workload::ManyKeys => (0..KEYS).map(|i| format!("{prefix}:{i}")).collect(),
    };
    let policy = workload.policy();
    if workload == Workload::DeniedFlood {
        // Straight to the inner store: setting up is not a store operation of the case.
        // Tried a few times: on the busy machine a cluster node can miss its response timeout.
        let empty = Limit::new(&keys[0], policy).with_cost(policy.burst());
        let mut attempts = 0;
        let verdict = loop {
            match store.inner.acquire(&[empty]).await {
                Ok(verdict) => break verdict,
                Err(error) if attempts < 5 => {
                    attempts += 1;
                    eprintln!("emptying {}: {error}; trying again", keys[0]);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("emptying {}: {error}", keys[0]),
            }
        };
        assert!(verdict.is_allowed());
    }
    let limiters = (0..REPLICAS)
        .map(|_| {
            let limiter = Limiter::from_arc(store.clone())
                .with_replicas(REPLICAS)
                // Long enough that every decision of the run is the store's, on a busy machine;
                // any that is not is counted as degraded and printed.
                .with_deadline(Duration::from_secs(2));
            match mode {
                Mode::PerDecision => limiter.with_over_limit_cache(0),
                Mode::OverLimitCache => limiter,
                Mode::Leases => limiter.with_leases(lease_config()).unwrap(),
            }
        })
        .collect();
    Case {
        limiters,
        keys,
        policy,
        cursor: AtomicU64::new(0),
        stats: Stats::default(),
    }
}

fn scale_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let stores = runtime.block_on(stores());
    let mut rows = Vec::new();
    for store in &stores {
        for workload in Workload::ALL {
            let group_name = format!("scale_out_{}_{}", store.name, workload.name());
            let mut group = c.benchmark_group(&group_name);
            group
                .warm_up_time(store.warm_up)
                .measurement_time(store.measurement)
                .sample_size(10);
            for mode in Mode::ALL {
                let counting = Arc::new(Counting {
                    inner: store.inner.clone(),
                    ops: AtomicU64::new(0),
                });
                let case = Arc::new(runtime.block_on(case(&counting, workload, mode, run_id)));
                let dynamo_before = store.dynamo.as_ref().map(|d| d.requests_sent());
                group.bench_function(mode.name(), |b| {
                    b.to_async(&runtime)
                        .iter_custom(|iters| run(case.clone(), iters))
                });
                let stats = &case.stats;
                let decisions = stats.decisions.load(Ordering::Relaxed);
                let ops = counting.ops.load(Ordering::Relaxed);
                let per = |n: u64| n as f64 / decisions.max(1) as f64;
                let row = Row {
                    group: group_name.clone(),
                    mode: mode.name(),
                    decisions,
                    admitted: stats.admitted.load(Ordering::Relaxed),
                    degraded: stats.degraded.load(Ordering::Relaxed),
                    ops_per_decision: per(ops),
                    dynamo_requests_per_decision: store
                        .dynamo
                        .as_ref()
                        .zip(dynamo_before)
                        .map(|(d, before)| per(d.requests_sent() - before)),
                    lease_fetches: case.limiters.iter().map(Limiter::lease_fetches).sum(),
                    lease_hits: case.limiters.iter().map(Limiter::lease_hits).sum(),
                    over_limit_hits: case.limiters.iter().map(Limiter::over_limit_hits).sum(),
                };
                rows.push(row);
            }
            group.finish();
        }
    }
    println!();
    println!(
        "{:42} {:17} {:>10} {:>10} {:>9} {:>12} {:>10} {:>8} {:>10} {:>10}",
        "group",
        "mode",
        "decisions",
        "admitted",
        "degraded",
        "ops/decision",
        "ddb req/d",
        "leases",
        "lease hits",
        "cache hits"
    );
    for row in &rows {
        println!(
            "{:42} {:17} {:>10} {:>10} {:>9} {:>12} {:>10} {:>8} {:>10} {:>10}",
            row.group,
            row.mode,
            row.decisions,
            row.admitted,
            row.degraded,
            ratio(row.ops_per_decision),
            row.dynamo_requests_per_decision
                .map(ratio)
                .unwrap_or_default(),
            row.lease_fetches,
            row.lease_hits,
            row.over_limit_hits,
        );
    }
}

criterion_group!(benches, scale_out);
criterion_main!(benches);
