//! `ratelimit-service` whose Redis dies: answers follow the failure policy (closed: over limit;
//! open: OK), the replica stays live and ready (the failure policy decides; a probe that failed
//! here would restart or unroute every replica at once), and `/metrics` says the store is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::{Process, free_port};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

async fn code(client: &mut RateLimitServiceClient<Channel>) -> i32 {
    client
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "remote_address".into(),
                    value: "10.9.9.9".into(),
                }],
                ..RateLimitDescriptor::default()
            }],
            hits_addend: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .overall_code
}

async fn get(port: u16, path: &str) -> Option<String> {
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
    Some(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_gets_the_failure_policy() {
    let redis_port = free_port();
    let redis = Process(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run scripts/services.sh up"),
    );
    let dir = std::env::temp_dir().join(format!("rl-store-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("edge.yaml");
    std::fs::write(
        &config,
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: second, requests_per_unit: 1000 }\n",
    )
    .unwrap();
    let mut clients = Vec::new();
    let mut services = Vec::new();
    let mut health_ports = Vec::new();
    for policy in ["closed", "open"] {
        let (grpc, http) = (free_port(), free_port());
        let mut started = None;
        // Redis may still be starting: the service refuses to start without its store.
        for _ in 0..100 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
                .args(["--config", config.to_str().unwrap(), "--store", "redis"])
                .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
                .args(["--failure-policy", policy])
                .args([
                    "--grpc",
                    &format!("127.0.0.1:{grpc}"),
                    "--http",
                    &format!("127.0.0.1:{http}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            if child.try_wait().unwrap().is_none() {
                started = Some(child);
                break;
            }
        }
        services.push(Process(started.expect("ratelimit-service did not start")));
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = RateLimitServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await
            {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        clients.push(client.unwrap());
        health_ports.push(http);
    }
    for (client, port) in clients.iter_mut().zip(&health_ports) {
        assert_eq!(code(client).await, Code::Ok as i32);
        assert!(
            get(*port, "/healthz")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
    }

    drop(redis); // killed
    // Closed: over limit. Open: OK. Both answer, neither hangs.
    for _ in 0..3 {
        assert_eq!(code(&mut clients[0]).await, Code::OverLimit as i32);
        assert_eq!(code(&mut clients[1]).await, Code::Ok as i32);
    }
    for port in &health_ports {
        for path in ["/livez", "/readyz", "/healthz"] {
            let reply = get(*port, path).await.unwrap();
            assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
        }
        // The requests above found the store down: reported apart from readiness.
        let metrics = get(*port, "/metrics").await.unwrap();
        assert!(
            metrics.contains("ratelimit_service_store_healthy 0"),
            "{metrics}"
        );
    }
    drop(services);
    std::fs::remove_dir_all(&dir).unwrap();
}
