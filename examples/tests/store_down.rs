//! `ratelimit-service` whose Redis dies: answers follow the failure policy (closed: over limit;
//! open: OK), the replica stays live and ready (the failure policy decides; a probe that failed
//! here would restart or unroute every replica at once), and `/metrics` says the store is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use support::{Service, ask, descriptor, private_redis, temp_dir};
use tonic::transport::Channel;

async fn code(client: &mut RateLimitServiceClient<Channel>) -> i32 {
    ask(
        client,
        "edge",
        vec![descriptor(&[("remote_address", "10.9.9.9")])],
        0,
    )
    .await
    .unwrap()
    .overall_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_gets_the_failure_policy() {
    let (redis, redis_port) = private_redis().await;
    let dir = temp_dir("rl-store-down");
    let config = dir.join("edge.yaml");
    std::fs::write(
        &config,
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: second, requests_per_unit: 1000 }\n",
    )
    .unwrap();
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let mut services = Vec::new();
    let mut clients = Vec::new();
    for policy in ["closed", "open"] {
        let service = Service::start(&[
            "--config",
            config.to_str().unwrap(),
            "--store",
            "redis",
            "--redis-url",
            &redis_url,
            "--failure-policy",
            policy,
        ])
        .await
        .unwrap_or_else(|e| panic!("ratelimit-service did not start: {e}"));
        clients.push(service.client().await);
        services.push(service);
    }
    for (client, service) in clients.iter_mut().zip(&services) {
        assert_eq!(code(client).await, Code::Ok as i32);
        assert_eq!(service.get("/healthz").await.unwrap().0, 200);
    }

    drop(redis); // killed
    // Closed: over limit. Open: OK. Both answer, neither hangs.
    for _ in 0..3 {
        assert_eq!(code(&mut clients[0]).await, Code::OverLimit as i32);
        assert_eq!(code(&mut clients[1]).await, Code::Ok as i32);
    }
    for service in &services {
        for path in ["/livez", "/readyz", "/healthz"] {
            let (status, body) = service.get(path).await.unwrap();
            assert_eq!(status, 200, "{path}: {body}");
        }
        // The requests above found the store down: reported apart from readiness.
        assert_eq!(
            service.metric("ratelimit_service_store_healthy").await,
            Some(0.0)
        );
    }
    drop(services);
    std::fs::remove_dir_all(&dir).unwrap();
}
