//! `TRACING_ENABLED`: every `ShouldRateLimit` call reaches an OpenTelemetry collector as a span,
//! over OTLP/HTTP as envoyproxy/ratelimit sends it by default. The collector is a real HTTP
//! server of the test's own that keeps what it is sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use parking_lot::Mutex;
use support::{PATIENCE, Service, ask, descriptor, temp_dir};

/// An OTLP/HTTP receiver on a loopback port: the bodies posted to `/v1/traces`.
async fn collector() -> (u16, Arc<Mutex<Vec<Bytes>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            keep.lock().push(body);
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_a_span_at_the_collector() {
    let (port, received) = collector().await;
    let dir = temp_dir("traces");
    let path = dir.join("edge.yaml");
    std::fs::write(
        &path,
        "domain: traced-edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 5 }\n",
    )
    .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let service = Service::start_with_env(
        &["--config", path.to_str().unwrap()],
        &[
            ("TRACING_ENABLED", "true"),
            ("TRACING_SERVICE_NAME", "ratelimit-under-test"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await
    .unwrap();
    let mut client = service.client().await;
    ask(
        &mut client,
        "traced-edge",
        vec![descriptor(&[("remote_address", "10.9.9.9")])],
        0,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let bodies = received.lock().clone();
        let all: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
        if contains(&all, b"ShouldRateLimit") {
            // The span, its service, its domain and its outcome; never the client's value.
            assert!(contains(&all, b"ratelimit-under-test"), "no service name");
            assert!(contains(&all, b"traced-edge"), "no domain attribute");
            assert!(contains(&all, b"OK"), "no outcome");
            assert!(
                !contains(&all, b"10.9.9.9"),
                "a descriptor value was exported"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no span reached the collector");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
