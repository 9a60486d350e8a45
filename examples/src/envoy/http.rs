//! The service's HTTP endpoints, as envoyproxy/ratelimit's Deployments probe them: on the HTTP
//! port `/healthcheck` and `/json`, with ours (`/livez`, `/readyz`, `/healthz`); on the debug
//! port `/rlconfig`.
//!
//! Health is three questions, answered apart, because a Redis outage must neither restart nor
//! unroute the replicas that keep deciding through it:
//! - `/livez`: the process answers (liveness).
//! - `/healthcheck` (envoyproxy/ratelimit's), `/readyz` and `/healthz`: a configuration is
//!   loaded and decisions are served, in whatever failure mode (readiness). `200` while the
//!   store is down: the failure policy decides, and Envoy gets an answer. `500` before the
//!   gRPC port is bound and once the process is stopping (`SIGTERM`), so that a load balancer
//!   drains it first.
//! - the store's own health: on `/metrics` and `/status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use parking_lot::RwLock;

use super::config::Config;
use super::json::{request_from_json, response_to_json};
use super::service::RateLimitServer;

/// Whether the service is serving, for the health endpoints.
#[derive(Debug, Default)]
pub struct Health {
    // Release when set, Acquire when read: whoever sees `ready` sees the listeners bound.
    ready: AtomicBool,
    stopping: AtomicBool,
    /// `HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED`: unhealthy while no domain is configured.
    needs_config: bool,
}

impl Health {
    /// Not ready yet; with `needs_config`, healthy only with at least one domain loaded.
    pub fn new(needs_config: bool) -> Self {
        Health {
            needs_config,
            ..Health::default()
        }
    }

    /// The gRPC port is bound and the configuration loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The process is stopping: fail health checks so that traffic drains away.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Why the service is not healthy, or `None` when it is.
    fn problem(&self, config: &Config) -> Option<&'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Some("stopping")
        } else if !self.ready.load(Ordering::Acquire) {
            Some("starting")
        } else if self.needs_config && config.domains().next().is_none() {
            Some("no configuration loaded")
        } else {
            None
        }
    }
}

/// `/healthcheck`, `/json`, `/livez`, `/readyz` and `/healthz`.
pub fn routes(server: Arc<RateLimitServer>, health: Arc<Health>) -> Router {
    let healthcheck = {
        let (server, health) = (server.clone(), health.clone());
        move || {
            let config = server.config_handle().read().clone();
            let answer = match health.problem(&config) {
                None => (StatusCode::OK, "OK".to_string()),
                Some(problem) => (StatusCode::INTERNAL_SERVER_ERROR, problem.to_string()),
            };
            async move { answer }
        }
    };
    let readiness = {
        let (server, health) = (server.clone(), health);
        move || {
            let config = server.config_handle().read().clone();
            let limiter = server.limiter();
            let answer = match health.problem(&config) {
                Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
                // The store's health is reported, not judged: while it is down the failure
                // policy decides, and this replica still answers every request.
                None if limiter.store_healthy() => {
                    (StatusCode::OK, "ready; store healthy".to_string())
                }
                None => (
                    StatusCode::OK,
                    format!(
                        "ready; store unavailable; failure policy {:?} decides",
                        limiter.failure_policy()
                    ),
                ),
            };
            async move { answer }
        }
    };
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route(
            "/json",
            post(move |body: Bytes| async move { json(&server, &body).await }),
        )
        .route("/livez", get(|| async { "alive" }))
        .route("/readyz", get(readiness.clone()))
        .route("/healthz", get(readiness))
}

/// `ShouldRateLimit` in JSON: `200` for `OK`, `429` for `OVER_LIMIT`, `400` for a body that is
/// not a request or a request that names nothing to decide, as envoyproxy/ratelimit answers.
async fn json(server: &RateLimitServer, body: &[u8]) -> Response {
    let request = match request_from_json(body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    match server.decide(&request).await {
        Ok(response) => {
            let code = if response.overall_code == Code::OverLimit as i32 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            };
            (
                code,
                [(header::CONTENT_TYPE, "application/json")],
                response_to_json(&response).to_string(),
            )
                .into_response()
        }
        Err(status) => (StatusCode::BAD_REQUEST, status.message().to_string()).into_response(),
    }
}

/// The debug port: `/rlconfig`, the loaded configuration as text, one line per limit (see
/// [`Config::dump`]), and `/`, the list of endpoints.
pub fn debug_routes(config: Arc<RwLock<Arc<Config>>>) -> Router {
    Router::new()
        .route(
            "/rlconfig",
            get(move || {
                let text = config.read().dump();
                async move { text }
            }),
        )
        .route(
            "/",
            get(|| async { "/rlconfig: print out the currently loaded configuration\n" }),
        )
}
