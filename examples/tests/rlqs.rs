//! The rate limit quota service as Envoy's `rate_limit_quota` filter speaks it: a tonic client
//! opens `StreamRateLimitQuotas`, reports usage per bucket, and gets token bucket assignments.
//! Two proxies on one bucket get rates that sum to the rule's rate; when one proxy's usage
//! grows, the other's assignment shrinks, pushed to it without its asking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::r#type::v3::TokenBucket;
use envoy_types::pb::envoy::r#type::v3::rate_limit_strategy::{BlanketRule, Strategy};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::bucket_action::BucketAction as Action;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_client::RateLimitQuotaServiceClient;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_usage_reports::BucketQuotaUsage;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::{
    BucketId, RateLimitQuotaResponse, RateLimitQuotaUsageReports,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use parking_lot::RwLock;
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::quota::QuotaServer;
use tokio::sync::mpsc;
use tonic::Streaming;
use tonic::transport::Channel;

const CONFIG: &str = r#"
domain: edge
descriptors:
  - key: name
    value: api
    descriptors:
      - key: tenant
        rate_limit: { unit: second, requests_per_unit: 100 }
  - key: name
    value: hourly
    descriptors:
      - key: tenant
        rate_limit: { unit: hour, requests_per_unit: 100 }
  - key: name
    value: blocked
    rate_limit: { unit: second, requests_per_unit: 0 }
"#;

/// The quota server on a loopback port, as one of `replicas`; a client of it.
async fn serve(replicas: u32) -> RateLimitQuotaServiceClient<Channel> {
    let config = Arc::new(RwLock::new(Arc::new(
        Config::parse("rlqs.yaml", CONFIG).unwrap(),
    )));
    serve_server(QuotaServer::new(config, replicas)).await
}

/// `server` on a loopback port; a client of it.
async fn serve_server(server: QuotaServer) -> RateLimitQuotaServiceClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.into_service())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    RateLimitQuotaServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

/// One proxy's stream: where it sends reports and where assignments arrive.
struct Proxy {
    reports: mpsc::Sender<RateLimitQuotaUsageReports>,
    answers: Streaming<RateLimitQuotaResponse>,
}

async fn open(client: &RateLimitQuotaServiceClient<Channel>) -> Proxy {
    let (reports, outgoing) = mpsc::channel(8);
    let answers = client
        .clone()
        .stream_rate_limit_quotas(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            outgoing,
        ))
        .await
        .unwrap()
        .into_inner();
    Proxy { reports, answers }
}

fn bucket(pairs: &[(&str, &str)]) -> BucketId {
    BucketId {
        bucket: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

/// A report of `asked` requests over one second for `id`.
fn usage(id: &BucketId, asked: u64) -> RateLimitQuotaUsageReports {
    RateLimitQuotaUsageReports {
        domain: "edge".into(),
        bucket_quota_usages: vec![BucketQuotaUsage {
            bucket_id: Some(id.clone()),
            time_elapsed: Some(PbDuration {
                seconds: 1,
                nanos: 0,
            }),
            num_requests_allowed: asked,
            num_requests_denied: 0,
        }],
    }
}

/// The next assignment's strategy for `id` on `proxy`, waiting at most 20 s.
async fn next_strategy(proxy: &mut Proxy, id: &BucketId) -> Strategy {
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(20), proxy.answers.message())
            .await
            .expect("no assignment within 20 s")
            .unwrap()
            .expect("the stream ended");
        for action in answer.bucket_action {
            if action.bucket_id.as_ref() != Some(id) {
                continue;
            }
            let Some(Action::QuotaAssignmentAction(assignment)) = action.bucket_action else {
                panic!("not an assignment: {:?}", action.bucket_action);
            };
            assert!(assignment.assignment_time_to_live.is_some());
            return assignment.rate_limit_strategy.unwrap().strategy.unwrap();
        }
    }
}

/// A token bucket's rate, per second.
fn rate(strategy: &Strategy) -> f64 {
    let Strategy::TokenBucket(TokenBucket {
        tokens_per_fill,
        fill_interval,
        ..
    }) = strategy
    else {
        panic!("not a token bucket: {strategy:?}");
    };
    let interval = fill_interval.unwrap();
    let seconds = interval.seconds as f64 + f64::from(interval.nanos) / 1e9;
    f64::from(tokens_per_fill.unwrap().value) / seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_the_rules_rate_and_a_growing_one_shrinks_the_other() {
    let client = serve(1).await;
    let id = bucket(&[("tenant", "acme"), ("name", "api")]);
    let (mut a, mut b) = (open(&client).await, open(&client).await);

    a.reports.send(usage(&id, 10)).await.unwrap();
    let a_alone = rate(&next_strategy(&mut a, &id).await);
    assert!(a_alone <= 100.0 && a_alone > 90.0, "alone: {a_alone}");

    // B arrives with the same demand: both get half, pushed to A as well.
    b.reports.send(usage(&id, 10)).await.unwrap();
    let b_half = rate(&next_strategy(&mut b, &id).await);
    let a_half = rate(&next_strategy(&mut a, &id).await);
    assert!(
        a_half + b_half <= 100.0,
        "{a_half} + {b_half} exceed the rule"
    );
    assert!(
        a_half + b_half > 99.0,
        "{a_half} + {b_half} strand the rule's rate"
    );
    assert!((a_half - b_half).abs() < 1.0, "{a_half} vs {b_half}");

    // A's usage grows: its share grows, and B's assignment shrinks without B reporting.
    a.reports.send(usage(&id, 90)).await.unwrap();
    let a_more = rate(&next_strategy(&mut a, &id).await);
    let b_less = rate(&next_strategy(&mut b, &id).await);
    assert!(b_less < b_half, "B kept {b_less} of {b_half}");
    assert!(a_more > a_half);
    assert!(
        a_more + b_less <= 100.0,
        "{a_more} + {b_less} exceed the rule"
    );
    assert!(a_more + b_less > 99.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hand_out_their_part_and_rules_of_zero_or_none_are_blanket() {
    let client = serve(4).await;
    let api = bucket(&[("name", "api"), ("tenant", "acme")]);
    let mut proxy = open(&client).await;
    proxy.reports.send(usage(&api, 50)).await.unwrap();
    let part = rate(&next_strategy(&mut proxy, &api).await);
    assert!(part <= 25.0 && part > 24.0, "a quarter of 100: {part}");

    let blocked = bucket(&[("name", "blocked")]);
    proxy.reports.send(usage(&blocked, 1)).await.unwrap();
    assert_eq!(
        next_strategy(&mut proxy, &blocked).await,
        Strategy::BlanketRule(BlanketRule::DenyAll as i32)
    );
    let unknown = bucket(&[("name", "elsewhere")]);
    proxy.reports.send(usage(&unknown, 1)).await.unwrap();
    assert_eq!(
        next_strategy(&mut proxy, &unknown).await,
        Strategy::BlanketRule(BlanketRule::AllowAll as i32)
    );
}

/// The bucket ids that `deploy/envoy-rlqs.yaml` builds: each name, with its fixed value or
/// `None` for a value taken from the request.
fn shipped_bucket_ids() -> Vec<(String, Option<String>)> {
    let text = include_str!("../../deploy/envoy-rlqs.yaml");
    let yaml: serde_norway::Value = serde_norway::from_str(text).unwrap();
    let filter = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"];
    assert_eq!(filter["domain"].as_str(), Some("edge"));
    let settings = &filter["bucket_matchers"]["matcher_list"]["matchers"][0]["on_match"]["action"]
        ["typed_config"];
    let builder = settings["bucket_id_builder"]["bucket_id_builder"]
        .as_mapping()
        .unwrap();
    builder
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().unwrap().to_string(),
                value["string_value"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_envoy_configuration_builds_buckets_the_documented_rule_limits() {
    let ids = shipped_bucket_ids();
    let pairs: Vec<(&str, &str)> = ids
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref().unwrap_or("acme")))
        .collect();
    assert_eq!(pairs.len(), 2, "{pairs:?}");
    let client = serve(1).await;
    let id = bucket(&pairs);
    let mut proxy = open(&client).await;
    proxy.reports.send(usage(&id, 5)).await.unwrap();
    let assigned = rate(&next_strategy(&mut proxy, &id).await);
    assert!(assigned <= 100.0 && assigned > 99.0, "{assigned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_binary_serves_rlqs_on_its_grpc_port() {
    let dir = support::temp_dir("rlqs-bin");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let service = support::Service::start(&["--config", path.to_str().unwrap()])
        .await
        .unwrap();
    let client = RateLimitQuotaServiceClient::connect(format!("http://127.0.0.1:{}", service.grpc))
        .await
        .unwrap();
    let id = bucket(&[("name", "api"), ("tenant", "acme")]);
    let mut proxy = open(&client).await;
    proxy.reports.send(usage(&id, 5)).await.unwrap();
    let assigned = rate(&next_strategy(&mut proxy, &id).await);
    assert!(assigned <= 100.0 && assigned > 99.0, "{assigned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_debited_from_the_rules_bucket_and_a_refusal_halves_the_assignments() {
    let config = Arc::new(RwLock::new(Arc::new(
        Config::parse("rlqs.yaml", CONFIG).unwrap(),
    )));
    let limiter = Arc::new(ratelimit_core::Limiter::new(
        ratelimit_core::MemoryStore::new(),
    ));
    let server = QuotaServer::new(config.clone(), 1).with_store(limiter.clone());
    let client = serve_server(server).await;
    let id = bucket(&[("name", "hourly"), ("tenant", "acme")]);
    let mut proxy = open(&client).await;
    proxy.reports.send(usage(&id, 100)).await.unwrap();
    let full = rate(&next_strategy(&mut proxy, &id).await);
    assert!(full > 0.99 * 100.0 / 3600.0, "{full}");

    // The proxy's 100 are in the rule's bucket, where ShouldRateLimit decides: it is empty.
    let bucket_key = {
        let config = config.read().clone();
        let entries = [
            ratelimit_examples::envoy::config::Entry::new("name", "hourly"),
            ratelimit_examples::envoy::config::Entry::new("tenant", "acme"),
        ];
        config.limit_for("edge", &entries).unwrap().bucket
    };
    let policy = ratelimit_core::Policy::new(100, Duration::from_secs(3600)).unwrap();
    let seen = limiter
        .peek(&[ratelimit_core::Limit::new(&bucket_key, policy)])
        .await
        .unwrap();
    assert!(!seen.is_allowed(), "the proxy's usage was not debited");

    // Another full second's worth at once: the store refuses it, the assignment halves.
    proxy.reports.send(usage(&id, 100)).await.unwrap();
    let halved = rate(&next_strategy(&mut proxy, &id).await);
    assert!(
        halved <= full / 2.0 + 0.5,
        "{halved} after a refusal, {full} before"
    );
}
