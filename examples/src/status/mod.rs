//! The live status page that the ingress gateway and `ratelimit-service` both serve, one concept
//! a file:
//!
//! - [`board`]: a [`StatusBoard`], sampled once a second, put together on request;
//! - [`history`]: decisions and denials a second over the last five minutes, in a bounded ring;
//! - [`limited`]: the most limited keys, a small decaying Space-Saving table;
//! - [`observer`]: the gateway's denied keys, from its layer's decisions;
//! - [`sources`]: the counters sampled, the layer's ([`LayerCounters`]) or the service's
//!   ([`ServiceCounters`]);
//! - [`anomaly`]: the anomaly controller's actions in force, with their reasons and time left;
//! - [`snapshot`]: what `/status.json` returns;
//! - [`page`]: the one static page at `/status` that draws it, refreshed every second.
//!
//! ```no_run
//! # async fn example(handle: ratelimit_tower::RateLimitHandle,
//! #                  limiter: std::sync::Arc<ratelimit_core::Limiter>) {
//! use ratelimit_examples::status::{LayerCounters, StatusBoard, routes};
//!
//! let board = StatusBoard::new("gateway", LayerCounters::new(handle, "global"), limiter, "memory")
//!     .start();
//! let app: axum::Router = routes(board); // GET /status, GET /status.json
//! # }
//! ```

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

pub mod anomaly;
pub mod board;
pub mod history;
pub mod limited;
pub mod observer;
pub mod page;
pub mod snapshot;
pub mod sources;

pub use anomaly::{ActiveAction, AnomalyView, RecentAction};
pub use board::StatusBoard;
pub use history::{HISTORY_SECONDS, Sample, Totals};
pub use limited::{LimitedKey, LimitedKeys};
pub use observer::LimitedKeysObserver;
pub use snapshot::{Breakdown, Fact, Rate, StatusSnapshot, StoreStatus};
pub use sources::{LayerCounters, ServiceCounters, Source};

/// `GET /status`, the page, and `GET /status.json`, the board's snapshot.
pub fn routes(board: Arc<StatusBoard>) -> Router {
    Router::new()
        .route("/status", get(|| async { Html(page::PAGE) }))
        .route(
            "/status.json",
            get(move || {
                let snapshot = board.snapshot();
                async move { json(&snapshot) }
            }),
        )
}

/// The snapshot as JSON, never cached: the page polls it for what is live.
fn json(snapshot: &StatusSnapshot) -> axum::response::Response {
    match serde_json::to_string(snapshot) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        // Every field is a number, a string or a list of them: unreachable in practice, and an
        // error answer rather than a panic should it ever happen (a NaN is written as null).
        Err(error) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
        )
            .into_response(),
    }
}
