//! The anomaly monitor's hot path next to the per-client map people write by hand, in one run:
//! recording one request (client and route) into the lock-free sketches, and counting it in a
//! `Mutex<HashMap<String, u64>>`; then the cost of a tick, and memory with 1,000,000 distinct keys.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use parking_lot::Mutex;
use ratelimit_anomaly::{Monitor, RequestEvent};

const KEYS: usize = 1_000_000;

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let keys = keys();
    let monitor = Monitor::default();
    let naive: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    // 10,000 keys fit in cache: the cost of the structures. 1,000,000 keys: with the misses of
    // reading a million distinct key strings, which both contenders pay.
    for pool in [10_000usize, KEYS] {
        let mut group = c.benchmark_group(format!("anomaly_record_{}k_keys", pool / 1000));
        group
            .warm_up_time(Duration::from_millis(700))
            .measurement_time(Duration::from_secs(3));
        let mut i = 0usize;
        group.bench_function("ratelimit_monitor", |b| {
            b.iter(|| {
                i = (i + 7919) % pool; // a stride that visits every key, not in order
                monitor.record(&RequestEvent {
                    client: Some(black_box(&keys[i])),
                    route: Some("/api/orders"),
                    ..Default::default()
                });
            })
        });
        let mut i = 0usize;
        group.bench_function("mutex_hashmap", |b| {
            b.iter(|| {
                i = (i + 7919) % pool;
                let key = black_box(&keys[i]);
                let mut map = naive.lock();
                if let Some(count) = map.get_mut(key.as_str()) {
                    *count += 1;
                } else {
                    map.insert(key.clone(), 1);
                }
            })
        });
        group.finish();
    }

    // The cost of a tick after a window of 1,000,000 distinct clients.
    let mut group = c.benchmark_group("anomaly_tick");
    group.sample_size(20);
    group.bench_function("ratelimit_monitor_tick_after_1m_keys", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                for key in keys.iter().step_by(10) {
                    monitor.record(&RequestEvent {
                        client: Some(key),
                        ..Default::default()
                    });
                }
                let start = Instant::now();
                black_box(monitor.tick());
                spent += start.elapsed();
            }
            spent
        })
    });
    group.finish();

    // Memory: fixed for the monitor; the map grows with every key.
    let map_bytes: usize = naive
        .lock()
        .keys()
        .map(|k| k.capacity() + std::mem::size_of::<String>() + 8 + 8)
        .sum();
    println!(
        "anomaly_memory: monitor {} KiB whatever the keys; mutex_hashmap {} KiB for {} keys (entries only)",
        monitor.memory() / 1024,
        map_bytes / 1024,
        naive.lock().len()
    );
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
