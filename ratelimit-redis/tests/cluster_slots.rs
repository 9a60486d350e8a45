//! Cluster slots: the store's slot arithmetic agrees with the cluster's, limits that share a hash
//! tag are decided by one atomic script, and a master killed under load is survived.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::redis_cli;
use ratelimit_core::conformance::fresh_key;
use ratelimit_core::{Limit, Policy, Store};

#[tokio::test]
async fn hash_tagged_limits_are_all_or_nothing_in_one_slot() {
    let store = common::cluster().await;
    let tag = fresh_key("tag");
    let (wide, narrow) = (format!("{{{tag}}}:wide"), format!("{{{tag}}}:narrow"));
    let request = [
        Limit::new(&wide, Policy::per_hour(10).unwrap()),
        Limit::new(&narrow, Policy::per_hour(1).unwrap()),
    ];
    assert!(store.acquire(&request).await.unwrap().is_allowed());
    assert!(!store.acquire(&request).await.unwrap().is_allowed());
    let left = store
        .peek(&[Limit::new(&wide, Policy::per_hour(10).unwrap()).with_cost(9)])
        .await
        .unwrap();
    assert!(
        left.is_allowed(),
        "the denied request debited the wide limit"
    );
    // Both keys really are in one slot.
    let slot =
        |k: String| async move { redis_cli(7000, &["cluster", "keyslot", &k]).await.unwrap() };
    assert_eq!(
        slot(store.redis_key(&wide)).await,
        slot(store.redis_key(&narrow)).await
    );
}

/// The store groups a request's limits by the slot it computes; the cluster must agree on every key,
/// tagged or not, or a group sent as one script would fail with CROSSSLOT.
#[tokio::test]
async fn slot_arithmetic_matches_the_cluster() {
    let store = common::cluster().await;
    for i in 0..100 {
        let plain = format!("{}:{i}", fresh_key("slots"));
        for key in [
            plain,
            format!("{{{i}}}:x"),
            format!("a{{}}{{b{i}}}"),
            format!("é{{{i}"),
        ] {
            let redis_key = store.redis_key(&key);
            let theirs = redis_cli(7000, &["cluster", "keyslot", &redis_key])
                .await
                .unwrap();
            assert_eq!(
                theirs.trim().parse::<u16>().unwrap(),
                ratelimit_redis::RedisStore::slot_of(&redis_key),
                "slot of {redis_key:?}"
            );
        }
    }
}

/// One breaker per node: a standalone server is one node; in a cluster the breaker follows the
/// key's slot range, so keys on different masters fall under different breakers, and keys that
/// share a hash tag under the same one.
#[tokio::test]
async fn keys_map_to_breakers_by_slot_range() {
    let standalone = common::standalone().await;
    assert!((0..100).all(|i| standalone.node_of(&format!("k{i}")) == 0));
    let cluster = common::cluster().await;
    let nodes: std::collections::HashSet<usize> = (0..200)
        .map(|i| cluster.node_of(&format!("k{i}")))
        .collect();
    assert!(nodes.len() > 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| *n < ratelimit_core::NODE_BREAKERS));
    assert_eq!(cluster.node_of("{t}:a"), cluster.node_of("{t}:b"));
}
