//! The ingress gateway asking ratelimit-service over gRPC instead of deciding itself.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use ratelimit_core::{Limiter, MemoryStore};
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::service::RateLimitServer;
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::mesh::{MeshLimits, start as start_mesh};
use ratelimit_examples::proxy::client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_the_rate_limit_service() {
    let config = Config::parse(
        "edge.yaml",
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 3 }\n",
    )
    .unwrap();
    let service = RateLimitServer::new(config, Arc::new(Limiter::new(MemoryStore::new())));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rls = listener.local_addr().unwrap();
    drop(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_service())
            .serve(rls),
    );
    // Wait until the service answers, not for a guess at how long it takes to start.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let client = RateLimitServiceClient::connect(format!("http://{rls}")).await;
        if client.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rate limit service did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mesh = start_mesh(MeshLimits::default()).await.unwrap();
    let egress = ratelimit_examples::egress::start(mesh).await.unwrap();
    let gateway = start(
        "127.0.0.1:0".parse().unwrap(),
        egress,
        GatewayConfig {
            remote: Some((format!("http://{rls}"), "edge".into())),
            ..GatewayConfig::default()
        },
    )
    .await
    .unwrap();
    let http = client();
    let call = |from: &'static str| {
        let http = http.clone();
        async move {
            let request = Request::get(format!("http://{}/auth/verify", gateway.address))
                .header("x-forwarded-for", from)
                .header("authorization", "Bearer t")
                .body(Body::empty())
                .unwrap();
            http.request(request).await.unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(call("10.3.0.1").await.status(), StatusCode::OK);
    }
    let refused = call("10.3.0.1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(call("10.3.0.2").await.status(), StatusCode::OK);
    // The gateway's own layer saw every request, the service's refusal included: its observers
    // and the anomaly controller are not blind while a service decides.
    let seen = |rule: &str| {
        let counters = gateway.handle.counters(rule).unwrap();
        counters.admitted.load(Ordering::Relaxed) + counters.limited.load(Ordering::Relaxed)
    };
    assert_eq!(seen("per-client"), 5);
    assert_eq!(seen("global"), 5);
    // And /metrics says so, rendered by metrics-exporter-prometheus.
    let metrics = http
        .request(
            Request::get(format!("http://{}/metrics", gateway.address))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        http_body_util::BodyExt::collect(metrics.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(r#"ratelimit_decisions_total{rule="global",outcome="admitted"} 5"#),
        "{text}"
    );
}
