//! The ingress gateway with its embedded limiter (per-client and global rules on the memory store,
//! never limiting here) next to the same proxy with no limiter, in one run: a GET through the
//! gateway and egress to the auth service, from 1 and from 32 concurrent tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::proxy::{HttpClient, client};
use ratelimit_examples::{egress, mesh};
use support::concurrently;

mod support;

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
}

criterion_group!(benches, gateway);
criterion_main!(benches);
