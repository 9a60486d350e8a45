//! Several limiter replicas, each with its own connection, share one key: all together they admit
//! no more than the bound. On a single server and on the cluster.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_core::conformance::{assert_bound, fresh_key};
use ratelimit_core::{Limit, Policy, Store};
use ratelimit_redis::RedisStore;

async fn replicas_share_one_limit(replicas: Vec<RedisStore>) {
    let key = Arc::new(fresh_key("replicas"));
    let policy = Policy::per_second(50).unwrap().with_burst(10).unwrap();
    let run_for = Duration::from_millis(1500);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for replica in replicas {
        let replica = Arc::new(replica);
        for _ in 0..16 {
            let (replica, key) = (replica.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                while start.elapsed() < run_for {
                    let sent = Instant::now();
                    if replica
                        .acquire(&[Limit::new(&key, policy)])
                        .await
                        .unwrap()
                        .is_allowed()
                    {
                        admitted.push((sent, Instant::now()));
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
    assert_bound(&admitted, &policy);
    let expected = policy.max_admitted(run_for) as usize;
    assert!(
        admitted.len() * 10 >= expected * 8,
        "{} of about {expected} admitted",
        admitted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_server() {
    let replicas = vec![
        common::standalone().await,
        common::standalone().await,
        common::standalone().await,
    ];
    replicas_share_one_limit(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_the_cluster() {
    let replicas = vec![
        common::cluster().await,
        common::cluster().await,
        common::cluster().await,
    ];
    replicas_share_one_limit(replicas).await;
}
