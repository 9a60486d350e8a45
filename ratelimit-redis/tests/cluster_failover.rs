//! A cluster master killed under load: decisions continue once its replica takes over. Alone in its
//! test binary, because it takes a master away from every other test for a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::redis_cli;
use ratelimit_core::conformance::fresh_key;
use ratelimit_core::{Limit, Policy, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_continue_after_a_master_is_killed() {
    let store = common::cluster().await;
    let key = fresh_key("failover");
    let policy = Policy::per_second(1000).unwrap();
    assert!(
        store
            .acquire(&[Limit::new(&key, policy)])
            .await
            .unwrap()
            .is_allowed()
    );

    // Find and kill the master that owns the key's slot.
    let slot = redis_cli(7000, &["cluster", "keyslot", &store.redis_key(&key)])
        .await
        .unwrap();
    let slot: u16 = slot.trim().parse().unwrap();
    let nodes = redis_cli(7000, &["cluster", "nodes"]).await.unwrap();
    let port = nodes
        .lines()
        .filter(|l| l.contains("master") && !l.contains("fail"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields.iter().skip(8).any(|range| {
                let mut bounds = range.split('-').map(|b| b.parse::<u16>().ok());
                match (bounds.next().flatten(), bounds.next().flatten()) {
                    (Some(lo), Some(hi)) => (lo..=hi).contains(&slot),
                    (Some(only), None) => only == slot,
                    _ => false,
                }
            });
            let port = fields
                .get(1)?
                .split(['@', ':'])
                .nth(1)?
                .parse::<u16>()
                .ok()?;
            owns.then_some(port)
        })
        .expect("no master owns the key's slot");
    let info = redis_cli(port, &["info", "server"]).await.unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_string();
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();

    // Errors while the replica takes over are fine (the Limiter's failure policy handles them);
    // what matters is that decisions come back without a new store.
    let mut errors = 0;
    let recovered = loop {
        match store.acquire(&[Limit::new(&key, policy)]).await {
            Ok(verdict) if verdict.is_allowed() => break killed.elapsed(),
            Ok(_) => {}
            Err(_) => errors += 1,
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no decision 30 s after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("decisions resumed {recovered:?} after the kill ({errors} errors meanwhile)");

    // Put the killed node back (it rejoins as a replica), so the cluster is whole again.
    let dir = std::env::var("RATELIMIT_SERVICES_DIR")
        .unwrap_or_else(|_| "/tmp/ratelimit-services".into());
    let node_dir = format!("{dir}/cluster/{port}");
    let status = common::without_inherited_fds("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("{node_dir}/nodes.conf"),
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--dir",
            &node_dir,
            "--logfile",
            &format!("{node_dir}/redis.log"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = redis_cli(port, &["cluster", "info"])
            .await
            .unwrap_or_default();
        let nodes = redis_cli(7000, &["cluster", "nodes"])
            .await
            .unwrap_or_default();
        if info.contains("cluster_state:ok") && !nodes.contains("fail") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not rejoin"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
