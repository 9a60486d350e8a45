//! A full key table is not a denial of service: 1,000,000 rotating attacker keys against a table
//! of 100,000, on a manual clock.
//!
//! Bounds defended:
//! - memory: the table never holds more than `max_keys` buckets (the overflow sketch is fixed);
//! - every key, attacker or not, admits at most `burst + rate × w` over every window, including
//!   "returners" that drain their bucket, wait to be evicted by the flood, and come back;
//! - established clients and legitimate newcomers keep at least 99% of their requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use ratelimit_core::{KeyedLimiter, KeyedLimiterBuilder, ManualClock, Policy};

const MAX_KEYS: usize = 100_000;
const ATTACK_KEYS: u64 = 1_000_000;
const STEP: Duration = Duration::from_millis(1);
const STEPS: u64 = 4_000;
const ESTABLISHED: u64 = 1_000;
const NEWCOMERS: u64 = 1_000;
const RETURNERS: u64 = 200;

// Key spaces that never overlap.
const ESTABLISHED_BASE: u64 = 1 << 40;
const NEWCOMER_BASE: u64 = 2 << 40;
const RETURNER_BASE: u64 = 3 << 40;

/// Admission times (ns on the manual clock) of one key.
#[derive(Default)]
struct Admitted(Vec<u64>);

impl Admitted {
    /// The most admitted in any window of `w`: every window that starts at an admission.
    fn worst_over(&self, w: u64) -> u64 {
        let mut worst = 0;
        let mut end = 0;
        for start in 0..self.0.len() {
            while end < self.0.len() && self.0[end] < self.0[start] + w {
                end += 1;
            }
            worst = worst.max((end - start) as u64);
        }
        worst
    }
}

#[test]
fn a_million_rotating_keys_neither_break_the_bound_nor_shut_out_legitimate_clients() {
    let policy = Policy::per_second(10).unwrap(); // burst 10, one token per 100 ms
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<u64, ManualClock> = KeyedLimiterBuilder::new(policy)
        .clock(clock.clone())
        .max_keys(MAX_KEYS)
        .build();

    let mut legit_sent = [0u64; 2]; // established, newcomers
    let mut legit_admitted = [0u64; 2];
    let mut tracked: HashMap<u64, Admitted> = HashMap::new();
    let mut attacker_admitted: HashMap<u64, u32> = HashMap::new();
    let mut max_len = 0;
    let mut next_attacker = 0u64;

    for step in 0..STEPS {
        let now_ns = step * 1_000_000;
        // Attack: 250 fresh keys a millisecond, each draining its whole burst at once
        // (1,000,000 keys over the run, each holding the most debt it can).
        if step < ATTACK_KEYS / 250 {
            for _ in 0..250 {
                let key = next_attacker;
                next_attacker += 1;
                for _ in 0..10 {
                    if limiter.acquire(&key, 1).unwrap().is_allowed() {
                        *attacker_admitted.entry(key).or_default() += 1;
                    }
                }
            }
        }
        // Returners: drain, go quiet for 300 ms (long enough for the flood to evict them), come
        // back and drain again. Without the overflow sketch each return would be a fresh burst.
        for r in 0..RETURNERS {
            if (step + r * 7) % 300 == 0 {
                let key = RETURNER_BASE + r;
                for _ in 0..10 {
                    if limiter.acquire(&key, 1).unwrap().is_allowed() {
                        tracked.entry(key).or_default().0.push(now_ns);
                    }
                }
            }
        }
        // Established clients (here before the attack) and newcomers (arriving during it), each
        // at half its rate: one request every 200 ms, staggered.
        for (class, base, count, from) in [
            (0usize, ESTABLISHED_BASE, ESTABLISHED, 0u64),
            (1, NEWCOMER_BASE, NEWCOMERS, 1_000),
        ] {
            if step < from {
                continue;
            }
            for c in 0..count {
                if (step + c) % 200 != 0 {
                    continue;
                }
                let key = base + c;
                legit_sent[class] += 1;
                if limiter.acquire(&key, 1).unwrap().is_allowed() {
                    legit_admitted[class] += 1;
                    tracked.entry(key).or_default().0.push(now_ns);
                }
            }
        }
        max_len = max_len.max(limiter.len());
        clock.advance(STEP);
    }

    let run_ns = STEPS * 1_000_000;
    let bound_over = |w: u64| policy.max_admitted(Duration::from_nanos(w));
    // Every tracked key over every window of 100 ms, 1 s and 3 s.
    let mut worst_ratio = 0.0f64;
    for (key, admitted) in &tracked {
        for w in [100_000_000u64, 1_000_000_000, 3_000_000_000] {
            let worst = admitted.worst_over(w);
            assert!(
                worst <= bound_over(w),
                "key {key:#x} admitted {worst} in {w} ns; bound {}",
                bound_over(w)
            );
            worst_ratio = worst_ratio.max(worst as f64 / bound_over(w) as f64);
        }
    }
    // Attacker keys sent at one instant: at most the burst each.
    let worst_attacker = attacker_admitted.values().copied().max().unwrap_or(0);
    assert!(u64::from(worst_attacker) <= bound_over(run_ns));
    assert!(u64::from(worst_attacker) <= u64::from(policy.burst()));

    assert!(max_len <= MAX_KEYS, "the table held {max_len} buckets");
    assert!(limiter.evicted() > 0, "the flood never filled the table");
    let share = |class: usize| legit_admitted[class] as f64 / legit_sent[class] as f64;
    println!(
        "max buckets {max_len} of {MAX_KEYS}; evicted {}; refused {}; established {:.4} of {}, \
         newcomers {:.4} of {}; worst tracked key at {:.2} of its bound; worst attacker key {}",
        limiter.evicted(),
        limiter.refused_when_full(),
        share(0),
        legit_sent[0],
        share(1),
        legit_sent[1],
        worst_ratio,
        worst_attacker,
    );
    assert!(share(0) >= 0.99, "established clients kept {:.4}", share(0));
    assert!(share(1) >= 0.99, "newcomers kept {:.4}", share(1));
}
