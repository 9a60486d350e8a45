//! Real servers on loopback for the layer's tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use ratelimit_core::{Limiter, MemoryStore};
use ratelimit_tower::RateLimitLayer;

/// A limiter over a fresh in-memory store.
pub fn memory_limiter() -> Arc<Limiter> {
    Arc::new(Limiter::new(MemoryStore::new()))
}

/// Serves a small axum app behind `layer` on an ephemeral loopback port, with connect info.
pub async fn serve_axum(layer: RateLimitLayer) -> SocketAddr {
    let app = Router::new()
        .route("/api/hello", get(|| async { "hello" }))
        .route("/login", post(|| async { "welcome" }))
        .route("/public", get(|| async { "public" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

pub fn http1() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

pub fn http2() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}
