//! The ingress gateway with its shipped defaults (`--per-client 5`, proxies on loopback trusted,
//! `X-Forwarded-For` believed), attacked from a loopback "proxy" as the issue measured it. Bound
//! for every test: one client, whatever else it writes into its requests, is admitted at most
//! `burst + rate × w` (5 + 5/s × the test's duration) by the per-client rule.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ratelimit_core::Policy;
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::mesh::{MeshLimits, start as start_mesh};
use ratelimit_examples::proxy::{HttpClient, client};

const PER_CLIENT: u32 = 5;

async fn gateway() -> SocketAddr {
    let mesh = start_mesh(MeshLimits::default()).await.unwrap();
    let egress = ratelimit_examples::egress::start(mesh).await.unwrap();
    let gateway = start(
        "127.0.0.1:0".parse().unwrap(),
        egress,
        GatewayConfig {
            per_client: PER_CLIENT,
            ..GatewayConfig::default()
        },
    )
    .await
    .unwrap();
    gateway.address
}

/// Sends 60 requests, the i-th with `headers(i)`, and checks the admitted count against the
/// per-client bound over the time they took.
async fn assert_one_client(headers: impl Fn(u32) -> Vec<(&'static str, String)>) {
    let at = gateway().await;
    let http: HttpClient = client();
    let policy = Policy::per_second(PER_CLIENT).unwrap();
    let start = Instant::now();
    let mut admitted = 0;
    for i in 0..60 {
        let mut request = Request::builder().uri(format!("http://{at}/auth/verify"));
        request = request.header("authorization", "Bearer t");
        for (name, value) in headers(i) {
            request = request.header(name, value);
        }
        let response = http
            .request(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        match response.status() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("request {i}: {other}"),
        }
    }
    let bound = policy.max_admitted(start.elapsed() + Duration::from_millis(1));
    assert!(
        admitted <= bound,
        "{admitted} of 60 admitted, bound {bound}"
    );
    assert!(admitted >= 1, "the honest first request was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_client_gets_its_limit() {
    assert_one_client(|_| vec![("x-forwarded-for", "198.51.100.7".into())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_forwarded_header_is_ignored() {
    assert_one_client(|i| {
        vec![
            ("x-forwarded-for", "198.51.100.7".into()),
            ("forwarded", format!("for=203.0.113.{i}")),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotating_x_real_ip_is_ignored() {
    assert_one_client(|i| {
        vec![
            ("x-forwarded-for", "198.51.100.7".into()),
            ("x-real-ip", format!("203.0.113.{i}")),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_addresses_inside_one_ipv6_64_are_one_client() {
    assert_one_client(|i| vec![("x-forwarded-for", format!("2001:db8:5:5::{:x}", i + 1))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_hops_left_of_the_proxy_entry_are_never_read() {
    assert_one_client(|i| {
        vec![(
            "x-forwarded-for",
            format!("10.{i}.0.1, junk-{i}, 198.51.100.7"),
        )]
    })
    .await;
}
