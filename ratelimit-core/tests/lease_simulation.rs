//! Leases past one machine, by simulation: 100 replicas (separate `Limiter`s) share one
//! `MemoryStore` behind a store that adds a round trip (1 ms, as in one region; 50 ms, as across
//! regions) and counts its operations. Time is tokio's paused clock, which the store and every
//! limiter read, so the run is deterministic and the round trips cost no real time.
//!
//! Two loads, each at twice what its busiest key's policy admits: one hot key, and a Zipf mix of
//! 100,000 keys. For each, with and without leases, the test prints admitted against the bound over
//! every window and store operations per decision, asserts the bound (`burst + rate × w`, plus
//! `max_outstanding` with leases) over every window of every key, and, with leases, that the hot
//! key is not starved: at least 90% of the bound over the run (stranded leases are the loss).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ratelimit_core::{
    Clock, FailurePolicy, LeaseConfig, Limit, Limiter, MemoryStore, Policy, Store, StoreError,
    Verdict,
};

const REPLICAS: u32 = 100;
const ZIPF_KEYS: usize = 100_000;
const RUN: Duration = Duration::from_secs(2);
/// Requests per millisecond, over all replicas: 20,000 a second (8,000 for the admitting key).
fn per_ms(load: Load) -> usize {
    match load {
        Load::HotAdmitting => 8,
        Load::HotKey | Load::Zipf => 20,
    }
}

/// tokio's clock as the crate's `Clock`: paused in these tests, so it moves only when every task
/// waits, by exactly what they wait for.
#[derive(Clone)]
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap()
    }
    fn unix_now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A memory store a round trip away: half of it before the decision, half after; every
/// operation counted.
struct DistantStore {
    inner: MemoryStore<TokioClock>,
    half_trip: Duration,
    ops: AtomicU64,
}

#[async_trait]
impl Store for DistantStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.half_trip).await;
        let verdict = self.inner.acquire(limits).await;
        tokio::time::sleep(self.half_trip).await;
        verdict
    }
    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.half_trip * 2).await;
        self.inner.peek(limits).await
    }
    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        self.inner.reset(key).await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// One key asked twice its rate.
    HotKey,
    /// One key asked 80% of its rate: every request fits.
    HotAdmitting,
    /// 100,000 keys, Zipf-distributed.
    Zipf,
}

struct Outcome {
    decisions: u64,
    ops: u64,
    /// The hot key's (or the busiest key's) admitted count over the run.
    top_admitted: u64,
    /// The worst window over every key: admitted − (burst + rate × w), in requests.
    worst_excess: f64,
    slack: u64,
}

fn policy(load: Load) -> Policy {
    match load {
        // 10,000 a second, bursts of 1,000: each of 100 replicas may lease 10.
        Load::HotKey | Load::HotAdmitting => Policy::per_second(10_000)
            .unwrap()
            .with_burst(1_000)
            .unwrap(),
        // Every key 1,000 a second, bursts of 1,000; the busiest key gets 8% of 20,000 a second.
        Load::Zipf => Policy::per_second(1_000).unwrap(),
    }
}

fn lease_config(load: Load) -> LeaseConfig {
    let mut config = LeaseConfig::new(policy(load).burst(), Duration::from_millis(500));
    config.min_tokens = 2;
    config
}

/// The Zipf distribution's cumulative weights (exponent 1) over `n` ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for rank in 1..=n {
        total += 1.0 / rank as f64;
        cdf.push(total);
    }
    cdf.iter_mut().for_each(|c| *c /= total);
    cdf
}

async fn simulate(load: Load, round_trip: Duration, leases: bool) -> Outcome {
    let clock = TokioClock(tokio::time::Instant::now());
    let store = Arc::new(DistantStore {
        inner: MemoryStore::with_clock(1 << 18, clock.clone()),
        half_trip: round_trip / 2,
        ops: AtomicU64::new(0),
    });
    let policy = policy(load);
    let limiters: Vec<Arc<Limiter>> = (0..REPLICAS)
        .map(|_| {
            let limiter = Limiter::from_arc(store.clone())
                .with_clock(clock.clone())
                .with_replicas(REPLICAS)
                .with_failure_policy(FailurePolicy::Closed)
                .with_deadline(Duration::from_secs(1));
            Arc::new(if leases {
                limiter.with_leases(lease_config(load)).unwrap()
            } else {
                limiter
            })
        })
        .collect();
    let keys: Arc<Vec<String>> = Arc::new(match load {
        Load::HotKey | Load::HotAdmitting => vec!["hot".to_string()],
        Load::Zipf => (0..ZIPF_KEYS).map(|rank| format!("zipf:{rank}")).collect(),
    });
    let cdf = zipf_cdf(ZIPF_KEYS);
    let mut rng = fastrand::Rng::with_seed(16);
    // (key, sent, received) of every admitted request, in clock nanoseconds.
    let admitted: Arc<Mutex<Vec<(usize, u64, u64)>>> = Arc::default();
    let mut requests = Vec::new();
    for _ in 0..RUN.as_millis() {
        for _ in 0..per_ms(load) {
            let key = match load {
                Load::HotKey | Load::HotAdmitting => 0,
                Load::Zipf => {
                    let u = rng.f64();
                    cdf.partition_point(|c| *c < u).min(ZIPF_KEYS - 1)
                }
            };
            let limiter = limiters[rng.usize(..limiters.len())].clone();
            let (keys, admitted, clock) = (keys.clone(), admitted.clone(), clock.clone());
            requests.push(tokio::spawn(async move {
                let sent = clock.now();
                let verdict = limiter
                    .acquire(&[Limit::new(&keys[key], policy)])
                    .await
                    .unwrap();
                if verdict.is_allowed() {
                    admitted.lock().unwrap().push((key, sent, clock.now()));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let decisions = requests.len() as u64;
    for request in requests {
        request.await.unwrap();
    }
    let mut admitted = std::mem::take(&mut *admitted.lock().unwrap());
    admitted.sort_unstable();
    let slack = if leases {
        u64::from(lease_config(load).max_outstanding)
    } else {
        0
    };
    let mut worst_excess = f64::MIN;
    let mut top_admitted = 0;
    for per_key in admitted.chunk_by(|a, b| a.0 == b.0) {
        let windows: Vec<(u64, u64)> = per_key.iter().map(|&(_, s, r)| (s, r)).collect();
        top_admitted = top_admitted.max(windows.len() as u64);
        worst_excess = worst_excess.max(worst_window_excess(&windows, &policy));
    }
    Outcome {
        decisions,
        ops: store.ops.load(Ordering::Relaxed),
        top_admitted,
        worst_excess,
        slack,
    }
}

/// The worst window of one key's admitted requests, each `(sent, received)`: the largest
/// `admitted − (burst + w / T)` over every window `[a, b]` from a send instant to a receive
/// instant, counting the requests wholly inside it (as `conformance::assert_bound` does, but in
/// O(n log n): a sweep over receive instants with a segment tree over send instants).
///
/// With `T` the emission interval, a window holds `count(a, b)` requests and the quantity to
/// maximise is `count × T + a − b`; adding a request received at `b` adds `T` to every start
/// `a` at or before its send instant, and the best start for `b` is the maximum over starts at or
/// before `b`.
fn worst_window_excess(admitted: &[(u64, u64)], policy: &Policy) -> f64 {
    let t = i64::try_from(policy.emission_interval_ns()).unwrap();
    let mut starts: Vec<u64> = admitted.iter().map(|&(s, _)| s).collect();
    starts.sort_unstable();
    let mut by_receive: Vec<(u64, u64)> = admitted.iter().map(|&(s, r)| (r, s)).collect();
    by_receive.sort_unstable();
    let initial: Vec<i64> = starts.iter().map(|&s| i64::try_from(s).unwrap()).collect();
    let mut tree = MaxAddTree::new(&initial);
    let mut best = i64::MIN;
    for (received, sent) in by_receive {
        let through = starts.partition_point(|&s| s <= sent);
        tree.add(0, through, t);
        let candidates = starts.partition_point(|&s| s <= received);
        best = best.max(tree.max(0, candidates) - i64::try_from(received).unwrap());
    }
    best as f64 / t as f64 - f64::from(policy.burst())
}

/// Range add, range max.
struct MaxAddTree {
    n: usize,
    max: Vec<i64>,
    add: Vec<i64>,
}

impl MaxAddTree {
    fn new(values: &[i64]) -> Self {
        let n = values.len().max(1);
        let mut tree = MaxAddTree {
            n,
            max: vec![i64::MIN / 2; 4 * n],
            add: vec![0; 4 * n],
        };
        tree.build(1, 0, n, values);
        tree
    }
    fn build(&mut self, node: usize, lo: usize, hi: usize, values: &[i64]) {
        if hi - lo == 1 {
            self.max[node] = values.get(lo).copied().unwrap_or(i64::MIN / 2);
            return;
        }
        let mid = (lo + hi) / 2;
        self.build(2 * node, lo, mid, values);
        self.build(2 * node + 1, mid, hi, values);
        self.max[node] = self.max[2 * node].max(self.max[2 * node + 1]);
    }
    fn add(&mut self, from: usize, to: usize, by: i64) {
        self.add_in(1, 0, self.n, from, to, by);
    }
    fn add_in(&mut self, node: usize, lo: usize, hi: usize, from: usize, to: usize, by: i64) {
        if to <= lo || hi <= from {
            return;
        }
        if from <= lo && hi <= to {
            self.max[node] += by;
            self.add[node] += by;
            return;
        }
        let mid = (lo + hi) / 2;
        self.add_in(2 * node, lo, mid, from, to, by);
        self.add_in(2 * node + 1, mid, hi, from, to, by);
        self.max[node] = self.max[2 * node].max(self.max[2 * node + 1]) + self.add[node];
    }
    fn max(&self, from: usize, to: usize) -> i64 {
        self.max_in(1, 0, self.n, from, to)
    }
    fn max_in(&self, node: usize, lo: usize, hi: usize, from: usize, to: usize) -> i64 {
        if to <= lo || hi <= from {
            return i64::MIN / 2;
        }
        if from <= lo && hi <= to {
            return self.max[node];
        }
        let mid = (lo + hi) / 2;
        self.max_in(2 * node, lo, mid, from, to)
            .max(self.max_in(2 * node + 1, mid, hi, from, to))
            + self.add[node]
    }
}

#[test]
fn the_window_check_counts_only_requests_wholly_inside() {
    // Burst 2, one every 10 ns: three requests within 9 ns are 0.1 over 2 + 9 / 10 (a violation:
    // the bound in whole requests is 2 + floor(0.9) = 2).
    let policy = Policy::from_parts(10, 2).unwrap();
    let close = |got: f64, want: f64| assert!((got - want).abs() < 1e-9, "{got} != {want}");
    close(worst_window_excess(&[(0, 0), (5, 5)], &policy), -0.5);
    close(worst_window_excess(&[(0, 0), (5, 5), (9, 9)], &policy), 0.1);
    close(
        worst_window_excess(&[(0, 0), (5, 5), (20, 20)], &policy),
        -0.5,
    );
    // A request known only to have been decided in [0, 30] is in no window shorter than that.
    close(
        worst_window_excess(&[(0, 30), (5, 5), (9, 9)], &policy),
        -0.4,
    );
}

async fn run(load: Load, round_trip: Duration) {
    let name = match load {
        Load::HotKey => "hot key, 2× its rate",
        Load::HotAdmitting => "hot key, 0.8× its rate",
        Load::Zipf => "Zipf 100k keys",
    };
    let policy = policy(load);
    let bound_over_run = policy.max_admitted(RUN);
    let demand = (RUN.as_millis() as u64) * per_ms(load) as u64;
    for leases in [false, true] {
        let outcome = simulate(load, round_trip, leases).await;
        println!(
            "| {name} | {round_trip:?} | {} | {} of {demand} | {bound_over_run} | {:+.1} | {} | {:.3} |",
            if leases { "leases" } else { "exact" },
            outcome.top_admitted,
            outcome.worst_excess,
            outcome.slack,
            outcome.ops as f64 / outcome.decisions as f64,
        );
        assert!(
            outcome.worst_excess <= outcome.slack as f64,
            "{name}, {round_trip:?}, leases {leases}: a window admitted {:.1} over \
             burst + rate × w, more than the slack of {}",
            outcome.worst_excess,
            outcome.slack
        );
        if leases && load == Load::HotAdmitting {
            // Every request fits the limit: leases must not strand more than their cap.
            assert!(
                outcome.top_admitted + outcome.slack >= demand,
                "{name}, {round_trip:?}: leases admitted {} of {demand} requests that all fit",
                outcome.top_admitted
            );
        }
        if leases && load == Load::HotKey {
            assert!(
                outcome.top_admitted as f64 >= 0.9 * bound_over_run as f64,
                "{name}, {round_trip:?}: leases admitted {} of a bound of {bound_over_run}",
                outcome.top_admitted
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn hundred_replicas_one_hot_key() {
    println!(
        "| load | round trip | mode | admitted (busiest key) of asked | burst + rate × run | worst window − (burst + rate × w) | slack allowed | store ops / decision |"
    );
    for round_trip in [Duration::from_millis(1), Duration::from_millis(50)] {
        run(Load::HotKey, round_trip).await;
        run(Load::HotAdmitting, round_trip).await;
    }
}

#[tokio::test(start_paused = true)]
async fn hundred_replicas_zipf_keys() {
    for round_trip in [Duration::from_millis(1), Duration::from_millis(50)] {
        run(Load::Zipf, round_trip).await;
    }
}
