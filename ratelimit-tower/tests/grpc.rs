//! The layer in front of a real tonic server, called by a real tonic client on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::memory_limiter;
use ratelimit_core::Policy;
use ratelimit_tower::{KeyExtractor, Matcher, RateLimitLayer, Rule};
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

async fn client_for(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn serve_grpc(layer: RateLimitLayer) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

#[tokio::test]
async fn a_denied_call_is_resource_exhausted_with_a_retry_delay() {
    let rule = Rule::new("health", KeyExtractor::PeerIp, Policy::per_hour(2).unwrap())
        .matching(Matcher::grpc_method("grpc.health.v1.Health/Check"));
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(rule)
        .build()
        .unwrap();
    let addr = serve_grpc(layer).await;
    let mut client = client_for(addr).await;
    for _ in 0..2 {
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().status, 1, "SERVING");
    }
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo detail");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1800),
        "{delay:?}"
    );
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert!(status.metadata().get("ratelimit").is_some());
}

#[tokio::test]
async fn rules_match_grpc_methods() {
    // Only Watch is limited; Check is not.
    let rule = Rule::new("watch", KeyExtractor::PeerIp, Policy::per_hour(1).unwrap())
        .matching(Matcher::grpc_method("grpc.health.v1.Health/Watch"));
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(rule)
        .build()
        .unwrap();
    let addr = serve_grpc(layer).await;
    let mut client = client_for(addr).await;
    for _ in 0..5 {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    let metadata_key = Rule::new(
        "by-tenant",
        KeyExtractor::header(http::HeaderName::from_static("x-tenant")),
        Policy::per_hour(1).unwrap(),
    );
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(metadata_key)
        .build()
        .unwrap();
    let addr = serve_grpc(layer).await;
    let mut client = client_for(addr).await;
    let call = |tenant: &'static str| {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request
            .metadata_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        request
    };
    assert!(client.check(call("a")).await.is_ok());
    assert_eq!(
        client.check(call("a")).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert!(
        client.check(call("b")).await.is_ok(),
        "tonic metadata keys the limit"
    );
}
