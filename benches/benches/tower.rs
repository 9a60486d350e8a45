//! An axum hello-world handler called in-process: bare, behind ratelimit-tower (memory store, one
//! per-IP rule that never limits), and behind tower_governor configured the same way, in one run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_tower::{KeyExtractor, RateLimitLayer, Rule};
use tower::ServiceExt;
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

fn handlers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let bare = app();
    let limiter = Arc::new(Limiter::new(MemoryStore::new()));
    let never = Policy::per_second(1_000_000_000)
        .unwrap()
        .with_burst(1_000_000)
        .unwrap();
    let ours = app().layer(
        RateLimitLayer::builder(limiter)
            .rule(Rule::new("per-ip", KeyExtractor::PeerIp, never))
            .build()
            .unwrap(),
    );
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000)
        .finish()
        .unwrap();
    let theirs = app().layer(GovernorLayer::new(config));

    let mut group = c.benchmark_group("axum_hello_world");
    group
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60);
    for (name, router) in [
        ("bare", bare),
        ("ratelimit_tower", ours),
        ("tower_governor", theirs),
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

criterion_group!(benches, handlers);
criterion_main!(benches);
