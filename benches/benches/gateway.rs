//! The ingress gateway with its embedded limiter (per-client and global rules on the memory store,
//! never limiting here) next to the same proxy with no limiter, in one run: a GET through the
//! gateway and egress to the auth service, from 1 and from 32 concurrent tasks. Then
//! `ShouldRateLimit` calls against ratelimit-service on the memory store, from 32 tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::BodyExt;
use ratelimit_core::{Limiter, MemoryStore};
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::service::RateLimitServer;
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::proxy::{HttpClient, client};
use ratelimit_examples::{egress, mesh};

/// Time for `tasks` tasks to make `iters` calls between them.
async fn concurrently<F, Fut>(tasks: u64, iters: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let call = call.clone();
            let share = iters / tasks + u64::from(t < iters % tasks);
            tokio::spawn(async move {
                for i in 0..share {
                    call(t * 1_000_000 + i).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

async fn get(client: &HttpClient, gateway: SocketAddr, n: u64) {
    let request = Request::get(format!("http://{gateway}/auth/verify"))
        .header(
            "x-forwarded-for",
            format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
        )
        .header("authorization", "Bearer bench")
        .body(Body::empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.into_body().collect().await.unwrap();
}

fn gateway(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (limited, bare) = runtime.block_on(async {
        let mesh = mesh::start(mesh::MeshLimits {
            auth: 1_000_000,
            ..mesh::MeshLimits::default()
        })
        .await
        .unwrap();
        let egress = egress::start(mesh).await.unwrap();
        let config = GatewayConfig {
            per_client: 1_000_000,
            global: 1_000_000,
            ..GatewayConfig::default()
        };
        let limited = start("127.0.0.1:0".parse().unwrap(), egress, config.clone())
            .await
            .unwrap();
        let bare = start(
            "127.0.0.1:0".parse().unwrap(),
            egress,
            GatewayConfig {
                limited: false,
                ..config
            },
        )
        .await
        .unwrap();
        (limited.address, bare.address)
    });
    let http = client();
    for tasks in [1u64, 32] {
        let mut group = c.benchmark_group(format!("gateway_{tasks}_tasks"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .sample_size(20);
        for (name, address) in [("with_ratelimit", limited), ("no_limiter", bare)] {
            let http = http.clone();
            group.bench_function(name, |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let http = http.clone();
                    concurrently(tasks, iters, move |n| {
                        let http = http.clone();
                        async move { get(&http, address, n).await }
                    })
                })
            });
        }
        group.finish();
    }

    // ShouldRateLimit on the memory store.
    let client = runtime.block_on(async {
        let config = Config::parse(
            "bench.yaml",
            "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: second, requests_per_unit: 1000000 }\n",
        )
        .unwrap();
        let server = RateLimitServer::new(config, Arc::new(Limiter::new(MemoryStore::new())));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server.into_service())
                .serve(address),
        );
        loop {
            if let Ok(client) = RateLimitServiceClient::connect(format!("http://{address}")).await {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut group = c.benchmark_group("should_rate_limit_memory_32_tasks");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    group.bench_function("ratelimit_service", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let client = client.clone();
            concurrently(32, iters, move |n| {
                let mut client = client.clone();
                async move {
                    client
                        .should_rate_limit(RateLimitRequest {
                            domain: "edge".into(),
                            descriptors: vec![RateLimitDescriptor {
                                entries: vec![Entry {
                                    key: "remote_address".into(),
                                    value: format!("10.0.{}.{}", (n >> 8) & 255, n & 255),
                                }],
                                ..RateLimitDescriptor::default()
                            }],
                            hits_addend: 0,
                        })
                        .await
                        .unwrap();
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, gateway);
criterion_main!(benches);
