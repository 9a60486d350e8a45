//! Hello-world handlers called in-process: bare, behind ratelimit-tower (memory store, one per-IP
//! rule that never limits), and behind tower_governor configured the same way, in one run. Once for
//! an axum route (`axum_hello_world`) and once for a gRPC method (`tonic_hello_world`: tonic's
//! health service answering `grpc.health.v1.Health/Check`, its response body read to the end).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::Request;
use http_body_util::{BodyExt, Full};
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_tower::{KeyExtractor, RateLimitLayer, Rule};
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;

fn app() -> Router {
    Router::new().route("/hello", get(|| async { "hello" }))
}

fn request() -> Request<Body> {
    let mut request = Request::get("/hello").body(Body::empty()).unwrap();
    let peer: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// A limit no benchmark loop can exhaust: a billion a second, a million at once.
fn never() -> Policy {
    Policy::per_second(1_000_000_000)
        .unwrap()
        .with_burst(1_000_000)
        .unwrap()
}

fn ours() -> RateLimitLayer {
    RateLimitLayer::builder(Arc::new(Limiter::new(MemoryStore::new())))
        .rule(Rule::new("per-ip", KeyExtractor::PeerIp, never()))
        .build()
        .unwrap()
}

/// tower_governor's layer for the same limit; `B` is the response body it renders denials into.
fn theirs<B>() -> GovernorLayer<
    tower_governor::key_extractor::PeerIpKeyExtractor,
    governor::middleware::NoOpMiddleware,
    B,
> {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000)
        .finish()
        .unwrap();
    GovernorLayer::new(config)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn axum_hello_world(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("axum_hello_world");
    group
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60);
    for (name, router) in [
        ("bare", app()),
        ("ratelimit_tower", app().layer(ours())),
        ("tower_governor", app().layer(theirs())),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let router = router.clone();
                async move {
                    let response = router.oneshot(request()).await.unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        });
    }
    group.finish();
}

/// `grpc.health.v1.Health/Check` for the server's own status: an empty message in one gRPC frame,
/// from a peer as tonic's server records it and as axum's `ConnectInfo` (the one place
/// tower_governor's peer-IP extractor looks; ratelimit-tower reads either).
fn grpc_request() -> Request<Full<Bytes>> {
    let mut request = Request::post("/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let peer: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    request.extensions_mut().insert(TcpConnectInfo {
        local_addr: None,
        remote_addr: Some(peer),
    });
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// Calls a gRPC service once and reads its response to the end: message and trailers.
async fn call_grpc<S>(service: S)
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    let response = service.oneshot(grpc_request()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap();
    let trailers = body.trailers().expect("gRPC trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

fn tonic_hello_world(c: &mut Criterion) {
    let runtime = runtime();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let bare = health.clone();
    let ours = ours().layer(health.clone());
    let theirs = theirs::<tonic::body::Body>().layer(health);
    let mut group = c.benchmark_group("tonic_hello_world");
    group
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60);
    group.bench_function("bare", |b| {
        b.to_async(&runtime).iter(|| call_grpc(bare.clone()))
    });
    group.bench_function("ratelimit_tower", |b| {
        b.to_async(&runtime).iter(|| call_grpc(ours.clone()))
    });
    group.bench_function("tower_governor", |b| {
        b.to_async(&runtime).iter(|| call_grpc(theirs.clone()))
    });
    group.finish();
}

/// `RATELIMIT_PROFILE=<contender>:<requests>` runs that many admitted requests through one
/// contender's axum router (`bare`, `ratelimit_tower` or `tower_governor`) instead of the benches,
/// for an instruction profile: run it under `valgrind --tool=callgrind` at two counts and take the
/// difference, which leaves out the set-up.
fn profile(spec: &str) {
    let (name, requests) = spec.split_once(':').unwrap_or((spec, "10000"));
    let requests: u64 = requests
        .parse()
        .expect("RATELIMIT_PROFILE=<contender>:<requests>");
    let router = match name {
        "bare" => app(),
        "ratelimit_tower" => app().layer(ours()),
        "tower_governor" => app().layer(theirs()),
        other => panic!("unknown contender {other}"),
    };
    runtime().block_on(async {
        for _ in 0..requests {
            let response = router.clone().oneshot(request()).await.unwrap();
            assert_eq!(response.status(), 200);
        }
    });
}

criterion_group!(benches, axum_hello_world, tonic_hello_world);

fn main() {
    if let Ok(spec) = std::env::var("RATELIMIT_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
