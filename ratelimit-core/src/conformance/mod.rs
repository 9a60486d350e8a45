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
//!
//! The checks are grouped one topic a file: a single caller's contract (`contract.rs`), the bound
//! under concurrent callers (`concurrency.rs`) and several replicas on one store (`replicas.rs`);
//! the helpers every check shares and the macro are here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use crate::policy::Policy;

mod concurrency;
mod contract;
mod replicas;

pub use concurrency::{
    concurrent_all_or_nothing, concurrent_callers_keep_the_bound,
    few_concurrent_callers_keep_the_bound,
};
pub use contract::{
    all_or_nothing, burst_then_deny, cost_is_debited, invalid_requests_are_typed_errors,
    keys_are_isolated, peek_consumes_nothing, reset_refills, tokens_refill_over_time,
};
pub use replicas::{leased_replicas_keep_the_bound, membership_counts_the_replicas};

/// A key no earlier run or other test has used.
pub fn fresh_key(test: &str) -> String {
    format!(
        "conformance:{test}:{}:{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// `count` an hour: a policy whose refill during a test is negligible.
pub(super) fn hourly(count: u32) -> Policy {
    Policy::per_hour(count).unwrap()
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
