//! The egress gateway: routes admitted requests by path prefix to the mesh's services, calling
//! them as `egress`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response, StatusCode};

use crate::mesh::{CALLER, Mesh};
use crate::proxy::{HttpClient, client, forward};

#[derive(Clone)]
struct Routes {
    client: HttpClient,
    prefixes: Vec<(&'static str, String)>,
}

async fn route(State(routes): State<Routes>, mut request: Request<Body>) -> Response<Body> {
    let path = request.uri().path();
    let Some((_, upstream)) = routes
        .prefixes
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")))
    else {
        let mut response = Response::new(Body::from("no route"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    request
        .headers_mut()
        .insert(CALLER, HeaderValue::from_static("egress"));
    forward(&routes.client, upstream, request, Duration::from_secs(5)).await
}

/// The egress router for `mesh`: `/auth`, `/orders` and `/payments` to their services.
pub fn router(mesh: Mesh) -> Router {
    let routes = Routes {
        client: client(),
        prefixes: vec![
            ("/auth", format!("http://{}", mesh.auth)),
            ("/orders", format!("http://{}", mesh.orders)),
            ("/payments", format!("http://{}", mesh.payments)),
        ],
    };
    Router::new().fallback(route).with_state(routes)
}

/// Serves the egress router on a loopback port.
pub async fn start(mesh: Mesh) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(mesh)).await {
            tracing::error!(%error, "egress stopped");
        }
    });
    Ok(address)
}
