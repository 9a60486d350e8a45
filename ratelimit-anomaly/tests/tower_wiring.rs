//! `layer + detector` in an axum app: a key flooding the service is seen by the monitor through
//! the layer's observer, penalised by the controller, and blocked by the layer, while the other
//! keys go on being served.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{HeaderName, Request, StatusCode};
use ratelimit_anomaly::tower::{TowerActuator, TowerObserver, spawn};
use ratelimit_anomaly::{Action, Controller, ControllerConfig, DetectorConfig, Dimension, Monitor};
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_tower::{KeyExtractor, RateLimitLayer, Rule};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_key_is_blocked_and_the_others_are_served() {
    let monitor = Arc::new(Monitor::default());
    let layer = RateLimitLayer::builder(Arc::new(Limiter::new(MemoryStore::new())))
        .rule(Rule::new(
            "per-key",
            KeyExtractor::header(HeaderName::from_static("x-api-key")),
            Policy::per_second(100_000).unwrap(),
        ))
        .observer(Arc::new(TowerObserver::new(
            monitor.clone(),
            "per-key",
            Dimension::ApiKey,
        )))
        .build()
        .unwrap();
    let actuator = TowerActuator::new(layer.handle(), "per-key").unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let config = ControllerConfig {
        tick: Duration::from_millis(50),
        detector: DetectorConfig {
            warmup_ticks: 10,
            ..DetectorConfig::default()
        },
        ..ControllerConfig::default()
    };
    let task = spawn(
        monitor,
        Controller::new(config),
        actuator,
        Duration::from_millis(50),
    );

    let call = |key: String| {
        let app = app.clone();
        async move {
            let request = Request::get("/")
                .header("x-api-key", key)
                .body(axum::body::Body::empty())
                .unwrap();
            app.oneshot(request).await.unwrap().status()
        }
    };
    // Normal traffic: 40 keys, one request each per 50 ms tick, for a second.
    for _ in 0..20 {
        for k in 0..40 {
            assert_eq!(call(format!("key-{k}")).await, StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One key floods: 400 requests a tick, beside the normal traffic.
    let mut blocked_at = None;
    for round in 0..40 {
        for _ in 0..400 {
            if call("evil".to_string()).await == StatusCode::TOO_MANY_REQUESTS
                && blocked_at.is_none()
            {
                blocked_at = Some(round);
            }
        }
        for k in 0..40 {
            assert_eq!(
                call(format!("key-{k}")).await,
                StatusCode::OK,
                "a normal key was refused"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        blocked_at.is_some_and(|r| r <= 5),
        "blocked at round {blocked_at:?}"
    );
    let status = task.status();
    let penalised: Vec<&str> = status
        .recent
        .iter()
        .filter_map(|d| match &d.decided.action {
            Action::PenalizeKey { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(penalised, vec!["evil"]);
}
