//! The Redis topologies envoyproxy/ratelimit's variables describe, each against real servers:
//! a master found through Redis Sentinel (`REDIS_TYPE=sentinel`), and a second Redis for the
//! limits per second (`REDIS_PERSECOND*`), where a request over its per-minute limit debits
//! nothing in either Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use support::{PATIENCE, Service, ask, descriptor, private_redis, redis_keys, temp_dir, unique};

use crate::common::{Process, free_port};

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

fn config_file(text: &str) -> String {
    let dir = temp_dir("topology");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Starts `server` (a redis-server of this test's own, on `port`) and waits until `redis-cli -p
/// port` with `ask` prints `expect`; the process, killed on drop.
async fn start_until(mut server: Command, port: u16, ask: &[&str], expect: &str) -> Process {
    let process = Process(
        server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/services.sh up"),
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(ask)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(expect) {
            return process;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} never answered {ask:?} with {expect}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Sentinel of this test's own watching the shared Redis on 6379 as `master`, once it names it.
async fn sentinel(master: &str) -> (Process, u16) {
    let port = free_port();
    let dir = temp_dir("sentinel");
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!("port {port}\nbind 127.0.0.1\nsentinel monitor {master} 127.0.0.1 6379 1\n"),
    )
    .unwrap();
    let mut server = Command::new("redis-server");
    server.arg(&conf).arg("--sentinel");
    let ask = ["sentinel", "get-master-addr-by-name", master];
    (start_until(server, port, &ask, "6379").await, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_is_found_through_sentinel() {
    let master = "rl-master";
    let (_sentinel, port) = sentinel(master).await;
    let prefix = format!("{}:", unique("sentinel"));
    let path = config_file(
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 2 }\n",
    );
    let service = Service::start_with_env(
        &["--config", &path],
        &[
            ("REDIS_TYPE", "sentinel"),
            // A Sentinel that does not answer first: the next one is asked.
            (
                "REDIS_URL",
                &format!("{master},127.0.0.1:{},127.0.0.1:{port}", free_port()),
            ),
            ("CACHE_KEY_PREFIX", &prefix),
        ],
    )
    .await
    .unwrap();
    let mut client = service.client().await;
    let address = descriptor(&[("remote_address", "10.1.1.1")]);
    for code in [OK, OK, OVER] {
        let answer = ask(&mut client, "edge", vec![address.clone()], 0)
            .await
            .unwrap();
        assert_eq!(answer.overall_code, code);
    }
    assert!(
        !redis_keys(6379, &prefix).is_empty(),
        "not counted in the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_knows_no_such_master_stops_the_start() {
    let (_sentinel, port) = sentinel("rl-known").await;
    let path = config_file("domain: edge\ndescriptors: []\n");
    let refused = Service::start_with_env(
        &["--config", &path],
        &[
            ("REDIS_TYPE", "sentinel"),
            ("REDIS_URL", &format!("rl-unknown,127.0.0.1:{port}")),
        ],
    )
    .await;
    let error = refused.err().expect("started without a master");
    assert!(error.contains("rl-unknown"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_second_count_in_the_per_second_redis_and_a_denial_debits_neither() {
    let (_fast, fast_port) = private_redis().await;
    let prefix = format!("{}:", unique("persecond"));
    let path = config_file(
        "domain: edge\ndescriptors:\n  - key: fast\n    rate_limit: { unit: second, requests_per_unit: 2 }\n  - key: slow\n    rate_limit: { unit: minute, requests_per_unit: 1 }\n",
    );
    let service = Service::start_with_env(
        &["--config", &path],
        &[
            ("BACKEND_TYPE", "redis"),
            ("REDIS_URL", "127.0.0.1:6379"),
            ("REDIS_PERSECOND", "true"),
            ("REDIS_PERSECOND_URL", &format!("127.0.0.1:{fast_port}")),
            ("CACHE_KEY_PREFIX", &prefix),
        ],
    )
    .await
    .unwrap();
    let mut client = service.client().await;
    let both = vec![descriptor(&[("fast", "a")]), descriptor(&[("slow", "a")])];
    let first = ask(&mut client, "edge", both.clone(), 0).await.unwrap();
    assert_eq!(first.overall_code, OK);
    assert_eq!(
        redis_keys(fast_port, &prefix).len(),
        1,
        "the per-second bucket"
    );
    assert_eq!(redis_keys(6379, &prefix).len(), 1, "the per-minute bucket");

    // Over the per-minute limit: denied, and the per-second Redis is not debited either.
    let second = ask(&mut client, "edge", both, 0).await.unwrap();
    assert_eq!(second.overall_code, OVER);
    let fast_only = ask(&mut client, "edge", vec![descriptor(&[("fast", "a")])], 0)
        .await
        .unwrap();
    // Two a second: the first request took one, this one takes the other. Had the denied
    // request debited it too, this one would be over (unless half a second passed since).
    assert_eq!(
        fast_only.overall_code, OK,
        "the denied request debited the per-second bucket"
    );
}

/// A Redis of this test's own that refuses every command without `password`, once it answers.
async fn redis_with_password(password: &str) -> (Process, u16) {
    let port = free_port();
    let mut server = Command::new("redis-server");
    server
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
        ]);
    let ask = ["-a", password, "--no-auth-warning", "ping"];
    (start_until(server, port, &ask, "PONG").await, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_auth_opens_a_password_protected_redis_and_a_wrong_one_stops_the_start() {
    // A password a URL must escape (no colon: REDIS_AUTH reads `user:password` at the first one,
    // as envoyproxy/ratelimit does).
    let password = "p@ss/w#rd?";
    let (_redis, port) = redis_with_password(password).await;
    let path = config_file(
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 1 }\n",
    );
    let address = format!("127.0.0.1:{port}");
    let service = Service::start_with_env(
        &["--config", &path],
        &[
            ("BACKEND_TYPE", "redis"),
            ("REDIS_URL", &address),
            ("REDIS_AUTH", password),
        ],
    )
    .await
    .unwrap();
    let mut client = service.client().await;
    let ip = descriptor(&[("remote_address", "10.2.2.2")]);
    for code in [OK, OVER] {
        let answer = ask(&mut client, "edge", vec![ip.clone()], 0).await.unwrap();
        assert_eq!(answer.overall_code, code);
    }
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "-a",
            password,
            "--no-auth-warning",
            "dbsize",
        ])
        .output()
        .unwrap();
    let keys: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(keys > 0, "nothing counted in the protected Redis");

    let refused = Service::start_with_env(
        &["--config", &path],
        &[
            ("BACKEND_TYPE", "redis"),
            ("REDIS_URL", &address),
            ("REDIS_AUTH", "wrong"),
        ],
    )
    .await;
    assert!(refused.is_err(), "started with a wrong password");
}
