//! The conformance suite: what every [`Store`] must do, as tests any backend crate can run.
//!
//! Each function takes a store and panics (it is test code) when the store breaks the contract.
//! Tests run on the store's own clock (Redis reads `TIME`), so they use policies whose refill during
//! a test is either negligible (one token an hour) or the very thing measured, and they check bounds
//! rather than exact timings. Every test uses fresh keys, so a store that persists between runs is fine.
//!
//! A backend runs all of it with one macro:
//!
//! ```text
//! ratelimit_core::store_conformance_tests!(async { my_backend::connect().await.unwrap() });
//! ```
//!
//! A backend that serves only a few hundred requests a second (an emulator written in Python, say)
//! adds `one_at_a_time`, so the checks do not queue behind each other and judge the store by the
//! backlog: `store_conformance_tests!(make_store(), one_at_a_time)`. Its bound is then checked with
//! 8 concurrent callers rather than 32; the bound itself is the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{RequestError, StoreError};
use crate::lease::LeaseConfig;
use crate::limiter::{FailurePolicy, Limiter};
use crate::policy::Policy;
use crate::store::{Limit, MAX_KEY_LEN, MAX_LIMITS, Store};

/// A key no earlier run or other test has used.
pub fn fresh_key(test: &str) -> String {
    format!(
        "conformance:{test}:{}:{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

fn hourly(count: u32) -> Policy {
    Policy::per_hour(count).unwrap()
}

/// A fresh key admits exactly its burst, counting `remaining` down, then denies with a wait of at
/// most one emission interval.
pub async fn burst_then_deny(store: Arc<dyn Store>) {
    let key = fresh_key("burst");
    let policy = hourly(5);
    for expected_remaining in (0..5).rev() {
        let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
        assert!(verdict.is_allowed(), "request within the burst was denied");
        let decision = verdict.decision().unwrap();
        assert_eq!(decision.limit(), 5);
        assert_eq!(decision.remaining(), expected_remaining);
        assert_eq!(decision.retry_after(), Duration::ZERO);
    }
    let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(!verdict.is_allowed(), "request past the burst was admitted");
    let decision = verdict.decision().unwrap();
    assert_eq!(decision.remaining(), 0);
    assert!(decision.retry_after() > Duration::ZERO);
    assert!(decision.retry_after() <= policy.emission_interval());
    assert!(decision.reset_after() <= policy.emission_interval() * 5);
    assert!(decision.reset_after() > policy.emission_interval() * 4);
}

/// A request's cost is debited whole, and a cost that does not fit is denied without debiting.
pub async fn cost_is_debited(store: Arc<dyn Store>) {
    let key = fresh_key("cost");
    let policy = hourly(5);
    let first = store
        .acquire(&[Limit::new(&key, policy).with_cost(3)])
        .await
        .unwrap();
    assert!(first.is_allowed());
    assert_eq!(first.decision().unwrap().remaining(), 2);
    let second = store
        .acquire(&[Limit::new(&key, policy).with_cost(3)])
        .await
        .unwrap();
    assert!(!second.is_allowed(), "cost 3 admitted with 2 left");
    assert_eq!(second.decision().unwrap().remaining(), 2);
    let third = store
        .acquire(&[Limit::new(&key, policy).with_cost(2)])
        .await
        .unwrap();
    assert!(
        third.is_allowed(),
        "the denied cost-3 request debited something"
    );
    assert_eq!(third.decision().unwrap().remaining(), 0);
}

/// Invalid requests are typed errors, the same from every store: a cost that can never fit, no
/// limits, too many limits, an empty, oversized or repeated key, a zero cost.
pub async fn invalid_requests_are_typed_errors(store: Arc<dyn Store>) {
    let key = fresh_key("invalid");
    let policy = hourly(5);
    let request_error = |result: Result<_, StoreError>| match result {
        Err(StoreError::Request(error)) => error,
        other => panic!("expected a request error, got {other:?}"),
    };
    assert_eq!(
        request_error(
            store
                .acquire(&[Limit::new(&key, policy).with_cost(6)])
                .await
        ),
        RequestError::CostExceedsBurst { cost: 6, burst: 5 }
    );
    assert_eq!(
        request_error(
            store
                .acquire(&[Limit::new(&key, policy).with_cost(0)])
                .await
        ),
        RequestError::ZeroCost
    );
    assert_eq!(
        request_error(store.acquire(&[]).await),
        RequestError::NoLimits
    );
    assert_eq!(
        request_error(store.acquire(&[Limit::new("", policy)]).await),
        RequestError::EmptyKey
    );
    let long = "k".repeat(MAX_KEY_LEN + 1);
    assert_eq!(
        request_error(store.acquire(&[Limit::new(&long, policy)]).await),
        RequestError::KeyTooLong {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        }
    );
    assert_eq!(
        request_error(
            store
                .acquire(&[Limit::new(&key, policy), Limit::new(&key, policy)])
                .await
        ),
        RequestError::DuplicateKey { position: 1 }
    );
    let keys: Vec<String> = (0..=MAX_LIMITS).map(|i| format!("{key}:{i}")).collect();
    let many: Vec<Limit<'_>> = keys.iter().map(|k| Limit::new(k, policy)).collect();
    assert_eq!(
        request_error(store.acquire(&many).await),
        RequestError::TooManyLimits {
            count: MAX_LIMITS + 1,
            max: MAX_LIMITS
        }
    );
    assert_eq!(
        request_error(store.peek(&[Limit::new(&key, policy).with_cost(6)]).await),
        RequestError::CostExceedsBurst { cost: 6, burst: 5 }
    );
    // None of the refused requests touched the bucket.
    let verdict = store
        .peek(&[Limit::new(&key, policy).with_cost(5)])
        .await
        .unwrap();
    assert!(verdict.is_allowed(), "a refused request debited the bucket");
}

/// When one limit denies, no limit is debited; each decision says what its limit alone said.
pub async fn all_or_nothing(store: Arc<dyn Store>) {
    let wide = fresh_key("aon-wide");
    let narrow = fresh_key("aon-narrow");
    let request = [
        Limit::new(&wide, hourly(10)),
        Limit::new(&narrow, hourly(1)),
    ];
    let first = store.acquire(&request).await.unwrap();
    assert!(first.is_allowed());
    assert_eq!(first.decisions()[0].remaining(), 9);
    assert_eq!(first.decisions()[1].remaining(), 0);
    for _ in 0..3 {
        let denied = store.acquire(&request).await.unwrap();
        assert!(!denied.is_allowed(), "the narrow limit was exceeded");
        assert!(
            denied.decisions()[0].is_allowed(),
            "the wide limit alone admits"
        );
        assert!(!denied.decisions()[1].is_allowed());
        assert!(denied.decision().unwrap().retry_after() > Duration::ZERO);
    }
    // The wide limit still holds 9: the denied requests debited nothing from it.
    let nine = store
        .peek(&[Limit::new(&wide, hourly(10)).with_cost(9)])
        .await
        .unwrap();
    assert!(nine.is_allowed(), "a denied request debited the wide limit");
    let ten = store
        .peek(&[Limit::new(&wide, hourly(10)).with_cost(10)])
        .await
        .unwrap();
    assert!(!ten.is_allowed(), "the admitted request was not debited");
}

/// Peek answers what acquire would, and consumes nothing.
pub async fn peek_consumes_nothing(store: Arc<dyn Store>) {
    let key = fresh_key("peek");
    let policy = hourly(4);
    let fresh = store.peek(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(fresh.is_allowed());
    assert_eq!(fresh.decision().unwrap().remaining(), 3);
    store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    for _ in 0..5 {
        let peeked = store.peek(&[Limit::new(&key, policy)]).await.unwrap();
        assert!(peeked.is_allowed());
        assert_eq!(peeked.decision().unwrap().remaining(), 2);
    }
    let too_much = store
        .peek(&[Limit::new(&key, policy).with_cost(4)])
        .await
        .unwrap();
    assert!(!too_much.is_allowed());
    let acquired = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert_eq!(acquired.decision().unwrap().remaining(), 2);
}

/// Reset fills a bucket up again.
pub async fn reset_refills(store: Arc<dyn Store>) {
    let key = fresh_key("reset");
    let policy = hourly(2);
    for _ in 0..2 {
        assert!(
            store
                .acquire(&[Limit::new(&key, policy)])
                .await
                .unwrap()
                .is_allowed()
        );
    }
    assert!(
        !store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    store.reset(&key).await.unwrap();
    let after = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(after.is_allowed());
    assert_eq!(after.decision().unwrap().remaining(), 1);
    // Resetting a key that has no state is fine.
    store.reset(&fresh_key("reset-unknown")).await.unwrap();
}

/// Exhausting one key leaves every other key untouched.
pub async fn keys_are_isolated(store: Arc<dyn Store>) {
    let a = fresh_key("iso-a");
    let b = fresh_key("iso-b");
    let policy = hourly(1);
    assert!(
        store
            .acquire(&[Limit::new(&a, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !store
            .acquire(&[Limit::new(&a, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    let other = store.acquire(&[Limit::new(&b, policy)]).await.unwrap();
    assert!(
        other.is_allowed(),
        "another key's exhaustion leaked into this one"
    );
}

/// Tokens come back at the policy's rate: a denied request is admitted after its retry-after.
pub async fn tokens_refill_over_time(store: Arc<dyn Store>) {
    let key = fresh_key("refill");
    let policy = Policy::per_second(10).unwrap().with_burst(1).unwrap();
    assert!(
        store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap()
            .is_allowed()
    );
    let denied = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(!denied.is_allowed());
    let wait = denied.decision().unwrap().retry_after();
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
    tokio::time::sleep(wait + Duration::from_millis(30)).await;
    let later = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
    assert!(
        later.is_allowed(),
        "no token came back after the retry-after"
    );
}

/// Many concurrent callers (32) on one key admit, over every window, at most
/// `burst + rate × window`, and not much less over the whole run.
pub async fn concurrent_callers_keep_the_bound(store: Arc<dyn Store>) {
    callers_keep_the_bound(store, 32).await;
}

/// [`concurrent_callers_keep_the_bound`] with 8 callers, for stores that serve only a few hundred
/// requests a second: with 32, each request would wait a quarter of a second in the store's queue
/// and be judged on time that old, and the check would measure the queue, not the store.
pub async fn few_concurrent_callers_keep_the_bound(store: Arc<dyn Store>) {
    callers_keep_the_bound(store, 8).await;
}

async fn callers_keep_the_bound(store: Arc<dyn Store>, callers: usize) {
    let key = Arc::new(fresh_key("bound"));
    let policy = Policy::per_second(20).unwrap().with_burst(5).unwrap();
    let run_for = Duration::from_millis(1500);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut admitted = Vec::new();
            while start.elapsed() < run_for {
                let sent = Instant::now();
                let verdict = store.acquire(&[Limit::new(&key, policy)]).await.unwrap();
                if verdict.is_allowed() {
                    admitted.push((sent, Instant::now()));
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            admitted
        }));
    }
    let mut admitted = Vec::new();
    for task in tasks {
        admitted.extend(task.await.unwrap());
    }
    admitted.sort();
    // The bound only: how much a store admits on the real clock depends on how busy the machine
    // is, so under-admission is measured on a manual clock (ratelimit-core/tests/bound.rs) and in
    // the benches, never asserted here.
    assert_bound(&admitted, &policy);
}

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

/// Checks `burst + rate × w` over every window spanned by the admitted requests, each given as
/// `(sent, received)` instants and sorted by `sent`.
///
/// Each request is known only to have been decided between its send and receive instants, so a
/// window `[a, b]` counts the requests that lie wholly inside it: those were surely decided in it.
/// Windows start at a send instant and end at a receive instant, which covers every maximal count.
pub fn assert_bound(admitted: &[(Instant, Instant)], policy: &Policy) {
    assert_bound_with_slack(admitted, policy, 0);
}

/// [`assert_bound`] with `slack` more allowed over every window: `burst + rate × w + slack`, the
/// bound of a mode that states its slack (leases: their cap, `max_outstanding`).
pub fn assert_bound_with_slack(admitted: &[(Instant, Instant)], policy: &Policy, slack: u64) {
    for (i, (from, _)) in admitted.iter().enumerate() {
        // Requests sent at or after `from` (the slice is sorted by send instant), by receive instant.
        let mut received: Vec<Instant> = admitted.iter().skip(i).map(|(_, r)| *r).collect();
        received.sort_unstable();
        for (rank, to) in received.iter().enumerate() {
            let inside = rank as u64 + 1;
            let window = to.duration_since(*from);
            let bound = policy.max_admitted(window).saturating_add(slack);
            assert!(
                inside <= bound,
                "{inside} admitted within {window:?}, more than the bound of {bound} \
                 (slack {slack})"
            );
        }
    }
}

/// Concurrent multi-limit requests sharing one global limit: the global limit is never exceeded,
/// and every limit is debited by exactly the admitted requests (a denial debits nothing anywhere).
pub async fn concurrent_all_or_nothing(store: Arc<dyn Store>) {
    let global = Arc::new(fresh_key("multi-global"));
    let global_policy = hourly(20);
    let own_policy = hourly(3);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let (store, global) = (store.clone(), global.clone());
        tasks.push(tokio::spawn(async move {
            let own = fresh_key(&format!("multi-own-{task}"));
            let mut admitted = 0u32;
            for _ in 0..6 {
                let verdict = store
                    .acquire(&[
                        Limit::new(&own, own_policy),
                        Limit::new(&global, global_policy),
                    ])
                    .await
                    .unwrap();
                admitted += u32::from(verdict.is_allowed());
            }
            (own, admitted)
        }));
    }
    let mut total = 0;
    for task in tasks {
        let (own, admitted) = task.await.unwrap();
        assert!(admitted <= 3, "a per-task limit of 3 admitted {admitted}");
        total += admitted;
        let left = store.peek(&[Limit::new(&own, own_policy)]).await.unwrap();
        let left = left.decision().unwrap();
        let expected_left = 3 - admitted;
        // `remaining` of a peek is what is left after the peeked cost of 1.
        assert_eq!(
            u32::from(left.is_allowed()) + left.remaining(),
            expected_left,
            "a limit was debited by a request that was not admitted"
        );
    }
    assert!(total <= 20, "the global limit of 20 admitted {total}");
    assert!(
        total >= 20,
        "only {total} admitted though 48 per-task tokens were offered"
    );
    let global_left = store
        .peek(&[Limit::new(&global, global_policy)])
        .await
        .unwrap();
    assert!(
        !global_left.is_allowed(),
        "the global limit was not debited"
    );
}

/// Held by each check of a suite declared `one_at_a_time`, so that its checks run in turn.
#[doc(hidden)]
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one `#[tokio::test]` per conformance check against the store made by `$make`, an
/// expression evaluating to a future of the store (say `async { MemoryStore::new() }`).
/// With `one_at_a_time` after it, the checks run in turn rather than all at once, and the bound is
/// checked with 8 concurrent callers rather than 32 ([`few_concurrent_callers_keep_the_bound`]).
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@each $make; false;
            burst_then_deny,
            cost_is_debited,
            invalid_requests_are_typed_errors,
            all_or_nothing,
            peek_consumes_nothing,
            reset_refills,
            keys_are_isolated,
            tokens_refill_over_time,
            concurrent_callers_keep_the_bound,
            concurrent_all_or_nothing,
            leased_replicas_keep_the_bound,
            membership_counts_the_replicas
        );
    };
    ($make:expr, one_at_a_time) => {
        $crate::store_conformance_tests!(@each $make; true;
            burst_then_deny,
            cost_is_debited,
            invalid_requests_are_typed_errors,
            all_or_nothing,
            peek_consumes_nothing,
            reset_refills,
            keys_are_isolated,
            tokens_refill_over_time,
            few_concurrent_callers_keep_the_bound,
            concurrent_all_or_nothing,
            leased_replicas_keep_the_bound,
            membership_counts_the_replicas
        );
    };
    (@each $make:expr; $serial:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let _turn = if $serial {
                    Some($crate::conformance::ONE_AT_A_TIME.lock().await)
                } else {
                    None
                };
                let store: ::std::sync::Arc<dyn $crate::Store> = ::std::sync::Arc::new($make.await);
                $crate::conformance::$check(store).await;
            }
        )*
    };
}
