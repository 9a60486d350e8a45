//! Requests through ingress -> egress -> services, admitted and limited as configured.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::mesh::{MeshLimits, start as start_mesh};
use ratelimit_examples::proxy::{HttpClient, client};

async fn call(
    client: &HttpClient,
    gateway: SocketAddr,
    method: Method,
    path: &str,
    from: &str,
    auth: bool,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header("x-forwarded-for", from)
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not reach the services");
    if auth {
        request = request.header("authorization", "Bearer t");
    }
    let response = client
        .request(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_egress_and_mesh_admit_and_limit_as_configured() {
    let mesh = start_mesh(MeshLimits {
        payments: 3,
        ..MeshLimits::default()
    })
    .await
    .unwrap();
    let egress = ratelimit_examples::egress::start(mesh).await.unwrap();
    let gateway = start(
        "127.0.0.1:0".parse().unwrap(),
        egress,
        GatewayConfig {
            per_client: 5,
            ..GatewayConfig::default()
        },
    )
    .await
    .unwrap();
    let http = client();
    let at = gateway.address;

    // Routed through both gateways to the right service, which sees the caller's credentials.
    assert_eq!(
        call(&http, at, Method::GET, "/auth/verify", "10.0.0.1", true).await,
        (StatusCode::OK, "verified".into())
    );
    assert_eq!(
        call(&http, at, Method::GET, "/auth/verify", "10.0.0.2", false)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&http, at, Method::GET, "/nowhere", "10.0.0.3", true)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Orders calls auth and payments: placed.
    assert_eq!(
        call(&http, at, Method::POST, "/orders", "10.0.0.4", true).await,
        (StatusCode::CREATED, "order placed".into())
    );

    // The gateway's per-client limit: 5 a second per client address.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            call(&http, at, Method::GET, "/auth/verify", "10.0.0.9", true)
                .await
                .0,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS);

    // The mesh's limit on what orders may ask of payments (3 a second): orders from many clients
    // pass the gateway, and the fourth in a burst finds payments busy.
    let mut placed = 0;
    let mut busy = 0;
    for i in 0..6 {
        match call(
            &http,
            at,
            Method::POST,
            "/orders",
            &format!("10.0.1.{i}"),
            true,
        )
        .await
        .0
        {
            StatusCode::CREATED => placed += 1,
            StatusCode::SERVICE_UNAVAILABLE => busy += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (2..=3).contains(&placed) && busy >= 3,
        "placed {placed}, busy {busy}"
    );

    // The status page is one static page that draws /status.json; the rules and their counts
    // are in the JSON it reads.
    let (status, page) = call(&http, at, Method::GET, "/status", "10.0.0.1", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("status.json"), "{page}");
    let (status, json) = call(&http, at, Method::GET, "/status.json", "10.0.0.1", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        json.contains("per-client") && json.contains("global"),
        "{json}"
    );
}
