//! What the service's attack, health and property tests share: the service in this process or as
//! its binary, a private Redis, requests, and plain HTTP GETs. Every wait polls for its condition
//! with a generous deadline: the machine is busy when the tests run.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use ratelimit_core::Limiter;
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::service::RateLimitServer;
use tonic::transport::Channel;

use crate::common::{Process, free_port};

/// How long any wait may take before the test gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `condition` every 25 ms until it holds; false after [`PATIENCE`].
pub async fn eventually<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The service in this process, over gRPC on loopback, deciding with `limiter`.
pub async fn serve(config: &str, limiter: Limiter) -> RateLimitServiceClient<Channel> {
    let server = RateLimitServer::new(
        Config::parse("edge.yaml", config).unwrap(),
        Arc::new(limiter),
    );
    serve_server(server).await
}

/// `server` over gRPC on loopback.
pub async fn serve_server(server: RateLimitServer) -> RateLimitServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(incoming),
    );
    connect(&format!("http://{address}")).await
}

/// A client of the service at `address`, once it accepts connections.
pub async fn connect(address: &str) -> RateLimitServiceClient<Channel> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(client) = RateLimitServiceClient::connect(address.to_string()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the service at {address} did not start");
}

/// A descriptor of `entries`.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

/// `ShouldRateLimit` in `domain`; the gRPC status is part of the answer.
pub async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> Result<RateLimitResponse, tonic::Status> {
    client
        .should_rate_limit(RateLimitRequest {
            domain: domain.into(),
            descriptors,
            hits_addend,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A Redis server of this test's own, on a free port, killed on drop; returned once it answers.
pub async fn private_redis() -> (Process, u16) {
    let port = free_port();
    let redis = Process(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/services.sh up"),
    );
    let up = eventually(|| async move { redis_ping(port).await }).await;
    assert!(up, "redis-server on {port} did not start");
    (redis, port)
}

async fn redis_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
}

/// A running `ratelimit-service` binary.
pub struct Service {
    /// The process, killed on drop.
    pub process: Process,
    /// Its gRPC port.
    pub grpc: u16,
    /// Its HTTP port.
    pub http: u16,
    /// Its debug port.
    pub debug: u16,
}

impl Service {
    /// Starts the binary with `args` (plus its ports); `None` when it exits first (say, because
    /// it refused its configuration), with what it wrote on stderr.
    pub async fn start(args: &[&str]) -> Result<Service, String> {
        Service::start_with_env(args, &[]).await
    }

    /// [`start`](Self::start) with these environment variables set for the process (say,
    /// `MERGE_DOMAIN_CONFIG`), on top of the test's own.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Service, String> {
        let (grpc, http, debug) = (free_port(), free_port(), free_port());
        let mut process = Process(
            Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
                .args(args)
                .envs(env.iter().copied())
                .args(["--grpc", &format!("127.0.0.1:{grpc}")])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(["--debug", &format!("127.0.0.1:{debug}")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let child = &mut process.0;
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                return Err(format!("exited with {status}: {stderr}"));
            }
            if get(http, "/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                // Nobody reads stderr from here on: a full pipe must not block the service.
                drop(child.stderr.take());
                return Ok(Service {
                    process,
                    grpc,
                    http,
                    debug,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("ratelimit-service did not become ready");
    }

    /// A gRPC client of the service.
    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        connect(&format!("http://127.0.0.1:{}", self.grpc)).await
    }

    /// `GET path` on the service's HTTP port.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.http, path).await
    }

    /// The value of the sample `name` (a full name with labels) on `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// `GET path` on loopback `port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    let code = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

/// A fresh name for this run: Redis keeps buckets between runs.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A directory of this test's own under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The keys under `prefix` in the Redis on loopback `port`.
pub fn redis_keys(port: u16, prefix: &str) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "--scan",
            "--pattern",
            &format!("{prefix}*"),
        ])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
