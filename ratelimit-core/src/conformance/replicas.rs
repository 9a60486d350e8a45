//! Several replicas over one store: leased tokens keep the bound with their stated slack, and
//! membership counts the replicas.
//!
//! Apart because these build [`Limiter`]s of their own over the store, on the real clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lease::LeaseConfig;
use crate::limiter::{FailurePolicy, Limiter};
use crate::policy::Policy;
use crate::store::{Limit, Store};

use super::{assert_bound_with_slack, fresh_key};

/// Three replicas (separate [`Limiter`]s with leases over this one store, on the real clock, 64
/// tasks each) on one hot key admit, over every window, at most
/// `burst + rate × w + max_outstanding`: leases add at most their cap to the bound.
///
/// The load alternates: all tasks hammer the key, then for a while one task per replica asks now
/// and then, so that each replica takes a lease and sits on it while the store's bucket fills up
/// again; the next hammer then spends the held leases and the refilled bucket at once, which is
/// where leases' slack shows (a steady hammer spends every lease the moment it is granted, and
/// would never show it).
pub async fn leased_replicas_keep_the_bound(store: Arc<dyn Store>) {
    const REPLICAS: u32 = 3;
    const TASKS: usize = 64;
    let key = Arc::new(fresh_key("leased"));
    let policy = Policy::per_second(200).unwrap().with_burst(30).unwrap();
    let mut config = LeaseConfig::new(30, Duration::from_secs(1));
    config.min_tokens = 2;
    // Hammer for 200 ms, then 600 ms quiet, twice, then a last hammer: 1.8 s.
    let (hammer, quiet) = (Duration::from_millis(200), Duration::from_millis(600));
    let cycle = hammer + quiet;
    let run_for = cycle * 2 + hammer;
    let limiters: Vec<Arc<Limiter>> = (0..REPLICAS)
        .map(|_| {
            // Closed, with a deadline well past any emulator's queue: store trouble must deny in
            // this test, never admit through the local fallback (whose bound is another).
            let limiter = Limiter::from_arc(store.clone())
                .with_replicas(REPLICAS)
                .with_failure_policy(FailurePolicy::Closed)
                .with_deadline(Duration::from_secs(5))
                .with_leases(config)
                .unwrap();
            Arc::new(limiter)
        })
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for limiter in &limiters {
        for task in 0..TASKS {
            let (limiter, key) = (limiter.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                loop {
                    let elapsed = start.elapsed();
                    if elapsed >= run_for {
                        break;
                    }
                    let into_cycle =
                        Duration::from_nanos((elapsed.as_nanos() % cycle.as_nanos()) as u64);
                    let hammering = into_cycle < hammer;
                    if !hammering && task != 0 {
                        tokio::time::sleep(cycle - into_cycle).await;
                        continue;
                    }
                    let sent = Instant::now();
                    let verdict = limiter.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                    if verdict.is_allowed() {
                        admitted.push((sent, Instant::now()));
                    }
                    if !hammering {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else if !verdict.is_allowed() {
                        let wait = verdict.decision().unwrap().retry_after();
                        let wait = wait.clamp(Duration::from_millis(2), Duration::from_millis(20));
                        tokio::time::sleep(wait).await;
                    }
                }
                admitted
            }));
        }
    }
    let mut admitted = Vec::new();
    for task in tasks {
        admitted.extend(task.await.unwrap());
    }
    admitted.sort();
    let served_by_leases: u64 = limiters.iter().map(|l| l.lease_hits()).sum();
    let fetches: u64 = limiters.iter().map(|l| l.lease_fetches()).sum();
    println!(
        "leased replicas: {} admitted in {:?} (bound over the run {}), {served_by_leases} \
         answered from leases, {fetches} leases fetched",
        admitted.len(),
        start.elapsed(),
        policy.max_admitted(start.elapsed()) + u64::from(config.max_outstanding),
    );
    assert!(served_by_leases > 0, "no request was served from a lease");
    // The bound only; under-admission is measured on a manual clock (ratelimit-core's lease
    // simulation), never asserted on the real clock.
    assert_bound_with_slack(&admitted, &policy, u64::from(config.max_outstanding));
}

/// Three replicas join a group in the store: each gets its own slot and each counts three; one
/// leaves and the two others count two, within a few heartbeat periods (waits poll with a
/// generous deadline: the machine may be busy).
pub async fn membership_counts_the_replicas(store: Arc<dyn Store>) {
    let group = fresh_key("members");
    // Long enough that a heartbeat task starved for a while on a busy machine keeps its slot.
    let period = Duration::from_millis(500);
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(
            crate::Membership::join(store.clone(), &group, period)
                .await
                .unwrap(),
        );
    }
    let mut slots: Vec<u32> = members.iter().map(crate::Membership::slot).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 3, "two replicas took one slot");
    wait_for_count(&members, 3).await;
    // Live replicas keep their slots: several periods later they still count three (polled, so a
    // heartbeat a busy machine delayed past its slot's life, which frees it for a moment until the
    // next one takes it back, is no failure; without heartbeats the count never comes back).
    tokio::time::sleep(period * 4).await;
    wait_for_count(&members, 3).await;
    drop(members.pop());
    wait_for_count(&members, 2).await;
}

/// Waits until every one of `members` counts `want`, for up to 30 s.
async fn wait_for_count(members: &[crate::Membership], want: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts: Vec<u32> = members.iter().map(crate::Membership::count).collect();
        if counts.iter().all(|&c| c == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counted {counts:?}, not {want} each"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
