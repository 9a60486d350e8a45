//! ratelimit-core next to governor, in the same run and the same benchmark groups.
//!
//! Each row is measured for three limiters: ours (its default clock: the time-stamp counter,
//! calibrated to run slow, where it is invariant), governor as it ships (its quanta TSC clock), and
//! governor on its std `Instant` clock. The 8-thread and 1,000,000-key rows compare ours with
//! governor as it ships; memory per key is the `memory` bench's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use governor::clock::MonotonicClock as GovernorStdClock;
use governor::{Quota, RateLimiter};
use ratelimit_core::{KeyedLimiter, Policy, TokenBucket};

const KEYS: usize = 10_000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A limit no benchmark loop can exhaust: a billion a second, a million at once.
fn never_limiting() -> (Policy, Quota) {
    (
        Policy::per_second(1_000_000_000)
            .unwrap()
            .with_burst(1_000_000)
            .unwrap(),
        Quota::per_second(nz(1_000_000_000)).allow_burst(nz(1_000_000)),
    )
}

/// A limit that is always exhausted: one an hour, already spent.
fn always_limiting() -> (Policy, Quota) {
    (
        Policy::per_hour(1).unwrap(),
        Quota::per_hour(nz(1)).allow_burst(nz(1)),
    )
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(60);
    group
}

fn single_bucket(c: &mut Criterion) {
    for (row, (policy, quota), prime) in [
        ("single_bucket_allow", never_limiting(), false),
        ("single_bucket_deny", always_limiting(), true),
    ] {
        let mut g = group(c, row);
        let ours = TokenBucket::new(policy);
        let theirs = RateLimiter::direct(quota);
        let theirs_std = RateLimiter::direct_with_clock(quota, GovernorStdClock);
        if prime {
            ours.acquire(1).unwrap();
            let _ = theirs.check();
            let _ = theirs_std.check();
        }
        let expect = !prime;
        g.bench_function("ratelimit", |b| {
            b.iter(|| assert_eq!(black_box(ours.acquire(1).unwrap()).is_allowed(), expect))
        });
        g.bench_function("governor", |b| {
            b.iter(|| assert_eq!(black_box(theirs.check()).is_ok(), expect))
        });
        g.bench_function("governor_std_clock", |b| {
            b.iter(|| assert_eq!(black_box(theirs_std.check()).is_ok(), expect))
        });
        g.finish();
    }
}

fn keyed_integers(c: &mut Criterion) {
    let (policy, quota) = never_limiting();
    let mut g = group(c, "keyed_10k_u64_keys");
    let ours: KeyedLimiter<u64> = KeyedLimiter::new(policy);
    let theirs = RateLimiter::<u64, _, _>::keyed(quota);
    let theirs_std = RateLimiter::<u64, _, _, _>::dashmap_with_clock(quota, GovernorStdClock);
    let mut i = 0u64;
    g.bench_function("ratelimit", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS as u64;
            black_box(ours.acquire(&i, 1).unwrap()).is_allowed()
        })
    });
    g.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS as u64;
            black_box(theirs.check_key(&i)).is_ok()
        })
    });
    g.bench_function("governor_std_clock", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS as u64;
            black_box(theirs_std.check_key(&i)).is_ok()
        })
    });
    g.finish();
}

fn keyed_ip_strings(c: &mut Criterion) {
    let (policy, quota) = never_limiting();
    let ips: Vec<String> = (0..KEYS)
        .map(|n| format!("10.{}.{}.{}", n / 65_536, (n / 256) % 256, n % 256))
        .collect();
    let mut g = group(c, "keyed_10k_ip_string_keys");
    let ours: KeyedLimiter<String> = KeyedLimiter::new(policy);
    let theirs = RateLimiter::<String, _, _>::keyed(quota);
    let theirs_std = RateLimiter::<String, _, _, _>::dashmap_with_clock(quota, GovernorStdClock);
    let mut i = 0usize;
    g.bench_function("ratelimit", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(ours.acquire(ips[i].as_str(), 1).unwrap()).is_allowed()
        })
    });
    g.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(theirs.check_key(&ips[i])).is_ok()
        })
    });
    g.bench_function("governor_std_clock", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(theirs_std.check_key(&ips[i])).is_ok()
        })
    });
    g.finish();
}

/// Wall time for two threads to make `iters` decisions between them on one shared bucket.
fn two_threads(iters: u64, check: &(dyn Fn() + Sync)) -> Duration {
    threads(2, iters, check)
}

/// Wall time for `n` threads to make `iters` decisions between them on one shared bucket.
fn threads(n: u64, iters: u64, check: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(n as usize);
    std::thread::scope(|s| {
        let workers: Vec<_> = (1..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..iters / n {
                        check();
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for _ in 0..iters - (n - 1) * (iters / n) {
            check();
        }
        for worker in workers {
            worker.join().unwrap();
        }
        start.elapsed()
    })
}

fn eight_threads(c: &mut Criterion) {
    let (policy, quota) = never_limiting();
    let mut g = group(c, "eight_threads_one_key");
    let ours = TokenBucket::new(policy);
    let theirs = RateLimiter::direct(quota);
    g.bench_function("ratelimit", |b| {
        b.iter_custom(|iters| {
            threads(8, iters, &|| {
                black_box(ours.acquire(1).unwrap());
            })
        })
    });
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            threads(8, iters, &|| {
                let _ = black_box(theirs.check());
            })
        })
    });
    g.finish();
}

const MILLION: u64 = 1_000_000;

fn keyed_million(c: &mut Criterion) {
    let (policy, quota) = never_limiting();
    let ours: KeyedLimiter<u64> = KeyedLimiter::new(policy);
    let theirs = RateLimiter::<u64, _, _>::keyed(quota);
    for key in 0..MILLION {
        ours.acquire(&key, 1).unwrap();
        let _ = theirs.check_key(&key);
    }
    let mut g = group(c, "keyed_1m_u64_keys");
    let mut i = 0u64;
    g.bench_function("ratelimit", |b| {
        b.iter(|| {
            i = (i + 7_919) % MILLION;
            black_box(ours.acquire(&i, 1).unwrap()).is_allowed()
        })
    });
    g.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 7_919) % MILLION;
            black_box(theirs.check_key(&i)).is_ok()
        })
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let (policy, quota) = never_limiting();
    let mut g = group(c, "two_threads_one_key");
    let ours = TokenBucket::new(policy);
    let theirs = RateLimiter::direct(quota);
    let theirs_std = RateLimiter::direct_with_clock(quota, GovernorStdClock);
    g.bench_function("ratelimit", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                black_box(ours.acquire(1).unwrap());
            })
        })
    });
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                let _ = black_box(theirs.check());
            })
        })
    });
    g.bench_function("governor_std_clock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                let _ = black_box(theirs_std.check());
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    single_bucket,
    keyed_integers,
    keyed_ip_strings,
    keyed_million,
    contended,
    eight_threads
);
criterion_main!(benches);
