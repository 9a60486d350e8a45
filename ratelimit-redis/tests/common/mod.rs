//! What the Redis tests share: where the servers are, and a Redis server of a test's own.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::Stdio;
use std::time::Duration;

use ratelimit_redis::RedisStore;

/// The standalone server `scripts/services.sh` starts (or `REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The cluster's seed nodes (or `REDIS_CLUSTER_NODES`, comma-separated).
pub fn cluster_nodes() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| {
            (7000..7006)
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .split(',')
        .map(str::to_string)
        .collect()
}

pub async fn standalone() -> RedisStore {
    RedisStore::connect(&redis_url())
        .await
        .expect("Redis on REDIS_URL is not reachable: run scripts/services.sh up")
}

pub async fn cluster() -> RedisStore {
    let nodes = cluster_nodes();
    let seeds: Vec<&str> = nodes.iter().map(String::as_str).collect();
    RedisStore::connect_cluster(&seeds)
        .await
        .expect("the Redis Cluster is not reachable: run scripts/services.sh up")
}

/// A `redis-server` of the test's own on `port`, so that the test may kill it.
pub struct OwnRedis {
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    pub async fn start(port: u16) -> Self {
        let mut server = OwnRedis { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn restart(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: run scripts/services.sh up");
        self.child = Some(child);
        for _ in 0..100 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Kills the server at once, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    pub async fn ping(&self) -> bool {
        redis_cli(self.port, &["ping"])
            .await
            .is_some_and(|out| out.trim() == "PONG")
    }
}

/// Runs `redis-cli -p port args…`; its output, or None when it failed.
pub async fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
