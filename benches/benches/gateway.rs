//! The ingress gateway with its embedded limiter (per-client and global rules on the memory store,
//! never limiting here) next to the same proxy with no limiter, in one run: a GET through the
//! gateway and egress to the auth service, from 1 and from 32 concurrent tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group};
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

/// The gateway with its limiter and the same proxy without one, on one mesh and egress.
fn gateways(runtime: &tokio::runtime::Runtime) -> (SocketAddr, SocketAddr) {
    runtime.block_on(async {
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
    })
}

fn gateway(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (limited, bare) = gateways(&runtime);
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
        interleaved(&runtime, &http, tasks, limited, bare);
    }
}

/// The ratio the goal is stated in, measured so that drift cannot fake it: rounds of the same
/// number of requests through each gateway in turn (ABBA, so neither always goes first), and the
/// median over the rounds of the limited gateway's requests per second over the bare one's.
/// Criterion's groups measure each contender for seconds on end, one after the other, and on this
/// loopback system the machine's state drifts more between them than the limiter costs.
fn interleaved(
    runtime: &tokio::runtime::Runtime,
    http: &HttpClient,
    tasks: u64,
    limited: SocketAddr,
    bare: SocketAddr,
) {
    const ROUNDS: usize = 21;
    let requests = 500 * tasks.min(8);
    let time = |address: SocketAddr| {
        let http = http.clone();
        runtime.block_on(concurrently(tasks, requests, move |n| {
            let http = http.clone();
            async move { get(&http, address, n).await }
        }))
    };
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let (first, second) = if round % 2 == 0 {
                (limited, bare)
            } else {
                (bare, limited)
            };
            let (a, b) = (time(first), time(second));
            let (with, without) = if round % 2 == 0 { (a, b) } else { (b, a) };
            // Requests per second with over without: the time without over the time with.
            without.as_secs_f64() / with.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "gateway_{tasks}_tasks interleaved: with_ratelimit / no_limiter requests per second, median of \
         {ROUNDS} rounds of {requests} requests each: {:.3}x (quartiles {:.3}x to {:.3}x)",
        ratios[ROUNDS / 2],
        ratios[ROUNDS / 4],
        ratios[3 * ROUNDS / 4],
    );
}

/// `RATELIMIT_PROFILE=<contender>:<requests>` sends that many requests from one task through one
/// contender (`with_ratelimit` or `no_limiter`) instead of the benches, for an instruction profile
/// (callgrind, at two counts, as for the tower bench), on a runtime of one thread.
fn profile(spec: &str) {
    let (name, requests) = spec.split_once(':').unwrap_or((spec, "2000"));
    let requests: u64 = requests
        .parse()
        .expect("RATELIMIT_PROFILE=<contender>:<requests>");
    // One thread: the servers, the proxies and the client take turns in a repeatable order, so
    // the instruction counts do not depend on how threads happened to interleave.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (limited, bare) = gateways(&runtime);
    let address = match name {
        "with_ratelimit" => limited,
        "no_limiter" => bare,
        other => panic!("unknown contender {other}"),
    };
    let http = client();
    runtime.block_on(async {
        for n in 0..requests {
            get(&http, address, n).await;
        }
    });
}

criterion_group!(benches, gateway);

fn main() {
    if let Ok(spec) = std::env::var("RATELIMIT_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
