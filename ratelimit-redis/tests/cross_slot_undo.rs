//! A cross-slot request whose restore fails. The per-client slot is debited, the global slot then
//! denies (another request took its token between the look and the debit), and restoring the
//! per-client slot fails: the request must still be denied, not handed to a failure policy that
//! could admit it past the global limit.
//!
//! The fault is Redis' own: the store connects as an ACL user that may not run `PTTL` or `DEL`,
//! which the restore script calls and the decision script never does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_cli;
use ratelimit_core::conformance::{assert_bound, fresh_key};
use ratelimit_core::{FailurePolicy, Limit, Limiter, Policy};
use ratelimit_redis::{DEFAULT_PREFIX, RedisStore};

const USER: &str = "ratelimit-no-restore";

/// A hash-tagged key whose slot is within `slots`.
fn key_in(slots: std::ops::Range<u16>, name: &str) -> String {
    loop {
        let key = format!("{{{}}}", fresh_key(name));
        if slots.contains(&RedisStore::slot_of(&format!("{DEFAULT_PREFIX}{key}"))) {
            return key;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_restore_still_denies() {
    // On every node (a failover elsewhere may promote a replica).
    for port in 7000..7006 {
        redis_cli(
            port,
            &[
                "acl",
                "setuser",
                USER,
                "reset",
                "on",
                ">no-restore",
                "~*",
                "&*",
                "+@all",
                "-pttl",
                "-del",
            ],
        )
        .await
        .expect("ACL SETUSER failed: is the cluster up? (scripts/services.sh up)");
        redis_cli(port, &["acl", "log", "reset"]).await.unwrap();
    }
    let seeds: Vec<String> = (7000..7006)
        .map(|p| format!("redis://{USER}:no-restore@127.0.0.1:{p}"))
        .collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(&seeds).await.unwrap();
    let limiter = Arc::new(
        // Open: a request that reached the failure policy would be admitted. A long deadline, so
        // that a busy machine does not send requests there. No over-limit cache: a denial answered
        // in process would never reach the store, and the race needs requests at the store.
        Limiter::new(store)
            .with_failure_policy(FailurePolicy::Open)
            .with_deadline(Duration::from_secs(5))
            .with_over_limit_cache(0),
    );
    // Slots are debited in ascending order: the contended global key must come after the
    // per-client ones for a denial on it to have something to restore.
    let global = key_in(12_000..16_384, "restore-global");
    let global_policy = Policy::per_second(50).unwrap().with_burst(5).unwrap();
    let own_policy = Policy::per_second(1_000).unwrap();
    let owns: Vec<String> = (0..16).map(|_| key_in(0..4_000, "restore-own")).collect();
    let (mut admitted, mut degraded, mut refused) = (Vec::new(), 0, 0);
    // Rounds of 16 tasks until the race has happened (a restore was refused), or a generous
    // deadline: how often it happens depends on how busy the machine is, never whether.
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused == 0 && Instant::now() < deadline {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for own in &owns {
            let (limiter, global, own) = (limiter.clone(), global.clone(), own.clone());
            tasks.push(tokio::spawn(async move {
                let (mut admitted, mut degraded) = (Vec::new(), 0u32);
                while start.elapsed() < Duration::from_millis(1_000) {
                    let sent = Instant::now();
                    let verdict = limiter
                        .acquire(&[
                            Limit::new(&own, own_policy),
                            Limit::new(&global, global_policy),
                        ])
                        .await
                        .unwrap();
                    degraded += u32::from(verdict.degraded_by().is_some());
                    if verdict.is_allowed() {
                        admitted.push((sent, Instant::now()));
                    }
                }
                (admitted, degraded)
            }));
        }
        for task in tasks {
            let (mine, theirs) = task.await.unwrap();
            admitted.extend(mine);
            degraded += theirs;
        }
        // The fault happened when restores were refused.
        refused = 0;
        for port in 7000..7006 {
            let log = redis_cli(port, &["acl", "log"]).await.unwrap_or_default();
            refused += log.matches(USER).count();
        }
    }
    admitted.sort();
    for port in 7000..7006 {
        redis_cli(port, &["acl", "deluser", USER]).await.unwrap();
    }
    assert!(
        refused > 0,
        "no restore was attempted in a minute: the race never happened"
    );
    assert_eq!(
        degraded, 0,
        "{degraded} requests went to the failure policy: a failed restore was an error"
    );
    assert_bound(&admitted, &global_policy);
    println!(
        "{} admitted, {refused} ACL log entries of refused restores",
        admitted.len()
    );
}
