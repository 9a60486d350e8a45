//! `ShouldRateLimit` from 32 concurrent callers over one gRPC channel, in one run next to its
//! peer: the same calls answered by a tonic server that does nothing (`noop_server`, the floor
//! that gRPC itself costs on this machine). Per store (memory, and the Redis on 127.0.0.1:6379,
//! `REDIS_URL` to change it), a hot key (every call the same descriptor value) and 10,000 keys.
//! Every limit is far above what the bench can send, so every call is an admission.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use ratelimit_core::{Limiter, MemoryStore, Store};
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::service::RateLimitServer;
use ratelimit_redis::RedisStore;
use support::concurrently;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

mod support;

const CALLERS: u64 = 32;

/// A row: its name, the server asked, and the descriptor value of call `n`.
type Case<'a> = (
    &'a str,
    &'a RateLimitServiceClient<Channel>,
    fn(u64) -> String,
);

/// The peer: a `RateLimitService` that answers `OK` without looking at the request.
struct Noop;

#[tonic::async_trait]
impl RateLimitService for Noop {
    async fn should_rate_limit(
        &self,
        _request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        Ok(Response::new(RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..RateLimitResponse::default()
        }))
    }
}

/// Serves `service` on a loopback port; a client of it once it answers.
async fn serve<S: RateLimitService>(service: S) -> RateLimitServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RateLimitServiceServer::new(service))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    RateLimitServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

/// A request for the descriptor value `value`.
fn request(domain: &str, value: String) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "remote_address".into(),
                value,
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    }
}

fn service(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A domain of this run's own: Redis keeps buckets between runs.
    let domain = format!("bench-{}", std::process::id());
    let config = format!(
        "domain: {domain}\ndescriptors:\n  - key: remote_address\n    rate_limit: {{ unit: second, requests_per_unit: 1000000 }}\n"
    );
    let noop = runtime.block_on(serve(Noop));
    let stores: Vec<(&str, Arc<dyn Store>)> = runtime.block_on(async {
        vec![
            ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
            (
                "redis",
                Arc::new(RedisStore::connect(&redis_url).await.unwrap()) as Arc<dyn Store>,
            ),
        ]
    });
    for (store_name, store) in stores {
        let limiter = Arc::new(Limiter::from_arc(store));
        let server =
            RateLimitServer::try_new(Config::parse("bench.yaml", &config).unwrap(), limiter)
                .unwrap();
        let client = runtime.block_on(serve(server));
        let mut group = c.benchmark_group(format!("should_rate_limit_{store_name}_32_callers"));
        group
            .throughput(Throughput::Elements(1))
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .sample_size(20);
        let cases: [Case<'_>; 3] = [
            ("noop_server", &noop, |_| "10.0.0.1".into()),
            ("ratelimit_hot_key", &client, |_| "10.0.0.1".into()),
            ("ratelimit_10k_keys", &client, |n| {
                let k = n % 10_000;
                format!("10.1.{}.{}", k >> 8, k & 255)
            }),
        ];
        for (name, client, value) in cases {
            let (client, domain) = (client.clone(), domain.clone());
            group.bench_function(name, |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let (client, domain) = (client.clone(), domain.clone());
                    concurrently(CALLERS, iters, move |n| {
                        let (mut client, domain) = (client.clone(), domain.clone());
                        async move {
                            let answer = client
                                .should_rate_limit(request(&domain, value(n)))
                                .await
                                .unwrap()
                                .into_inner();
                            assert_eq!(answer.overall_code, Code::Ok as i32);
                        }
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, service);
criterion_main!(benches);
