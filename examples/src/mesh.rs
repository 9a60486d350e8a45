//! The service mesh of the design: auth, orders and payments, which call each other (orders calls
//! auth, then payments), each behind ratelimit-tower with limits per calling service, as a mesh
//! sidecar would enforce them. A caller names itself in `x-caller`; the egress gateway calls as
//! `egress`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ratelimit_core::{Limiter, MemoryStore, Policy, PolicyError};
use ratelimit_tower::{ConfigError, KeyExtractor, RateLimitLayer, Rule};

use crate::proxy::{HttpClient, client};

/// The header in which a service names itself when it calls another.
pub const CALLER: HeaderName = HeaderName::from_static("x-caller");

/// Requests a second each calling service may send to each service.
#[derive(Debug, Clone, Copy)]
pub struct MeshLimits {
    /// Per caller, to auth.
    pub auth: u32,
    /// Per caller, to orders.
    pub orders: u32,
    /// Per caller, to payments.
    pub payments: u32,
}

impl Default for MeshLimits {
    fn default() -> Self {
        MeshLimits {
            auth: 500,
            orders: 300,
            payments: 300,
        }
    }
}

/// Where the running services listen.
#[derive(Debug, Clone, Copy)]
pub struct Mesh {
    /// The auth service.
    pub auth: SocketAddr,
    /// The orders service.
    pub orders: SocketAddr,
    /// The payments service.
    pub payments: SocketAddr,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A limit is not a valid policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A layer could not be built.
    #[error(transparent)]
    Layer(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// The layer every service wears: one rule, keyed by the caller's name, `per_second` each.
fn per_caller(service: &str, per_second: u32) -> Result<RateLimitLayer, MeshError> {
    Ok(
        RateLimitLayer::builder(Arc::new(Limiter::new(MemoryStore::new())))
            .rule(Rule::new(
                &format!("{service}-per-caller"),
                KeyExtractor::header(CALLER),
                Policy::per_second(per_second)?,
            ))
            .build()?,
    )
}

async fn serve(router: Router) -> Result<SocketAddr, MeshError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "service stopped");
        }
    });
    Ok(address)
}

async fn verify(request: Request<Body>) -> impl IntoResponse {
    match request.headers().get("authorization") {
        Some(_) => (StatusCode::OK, "verified"),
        None => (StatusCode::UNAUTHORIZED, "no credentials"),
    }
}

async fn charge() -> impl IntoResponse {
    (StatusCode::OK, "charged")
}

#[derive(Clone)]
struct Orders {
    client: HttpClient,
    auth: SocketAddr,
    payments: SocketAddr,
}

/// Calls `address` + `path` as the orders service; the status it answered (502 if unreachable).
async fn call(
    orders: &Orders,
    method: &str,
    address: SocketAddr,
    path: &str,
    auth: Option<&HeaderValue>,
) -> StatusCode {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .header(CALLER, "orders");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let Ok(request) = request.body(Body::empty()) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match tokio::time::timeout(Duration::from_secs(2), orders.client.request(request)).await {
        Ok(Ok(response)) => response.status(),
        _ => StatusCode::BAD_GATEWAY,
    }
}

async fn place_order(State(orders): State<Orders>, request: Request<Body>) -> impl IntoResponse {
    let auth = request.headers().get("authorization").cloned();
    let verified = call(&orders, "GET", orders.auth, "/auth/verify", auth.as_ref()).await;
    if verified != StatusCode::OK {
        return (verified, "auth refused");
    }
    match call(&orders, "POST", orders.payments, "/payments/charge", None).await {
        StatusCode::OK => (StatusCode::CREATED, "order placed"),
        StatusCode::TOO_MANY_REQUESTS => (StatusCode::SERVICE_UNAVAILABLE, "payments busy"),
        other => (other, "payment failed"),
    }
}

/// Starts the three services on loopback ports.
pub async fn start(limits: MeshLimits) -> Result<Mesh, MeshError> {
    let auth = serve(
        Router::new()
            .route("/auth/verify", get(verify))
            .layer(per_caller("auth", limits.auth)?),
    )
    .await?;
    let payments = serve(
        Router::new()
            .route("/payments/charge", post(charge))
            .layer(per_caller("payments", limits.payments)?),
    )
    .await?;
    let state = Orders {
        client: client(),
        auth,
        payments,
    };
    let orders = serve(
        Router::new()
            .route("/orders", post(place_order))
            .with_state(state)
            .layer(per_caller("orders", limits.orders)?),
    )
    .await?;
    Ok(Mesh {
        auth,
        orders,
        payments,
    })
}
