//! The service's unit tests: per-rule statistics as envoyproxy/ratelimit counts them, shadow
//! mode, statistics keys, and the requests that are errors.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry as PbEntry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use ratelimit_core::{Limiter, MemoryStore};
use tonic::Request;

use crate::envoy::config::Config;
use crate::envoy::metrics;

use super::RateLimitServer;

const CONFIG: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: path
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 2 }
    shadow_mode: true
  - key: tenant
    value: acme
    descriptors:
      - key: plan
        rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: user
    detailed_metric: true
    rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: route
    value: "api*"
    value_to_metric: true
    rate_limit: { unit: minute, requests_per_unit: 5 }
"#;

fn server() -> RateLimitServer {
    let config = Config::parse("edge.yaml", CONFIG).unwrap();
    RateLimitServer::new(config, Arc::new(Limiter::new(MemoryStore::new())))
}

/// A request of one descriptor with `entries`, costing `hits`.
fn request(entries: &[(&str, &str)], hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| PbEntry {
                    key: (*key).into(),
                    value: (*value).into(),
                })
                .collect(),
            ..RateLimitDescriptor::default()
        }],
        hits_addend: hits,
    }
}

/// Each request's overall code, and the exposition text of what answering them recorded,
/// in a recorder of their own.
fn answer(server: &RateLimitServer, requests: &[RateLimitRequest]) -> (Vec<Code>, String) {
    let recorder = metrics::builder().unwrap().build_recorder();
    let handle = recorder.handle();
    // A runtime on this thread, so that the local recorder sees everything the calls record.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let codes = ::metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let mut codes = Vec::new();
            for request in requests {
                let answer = server
                    .should_rate_limit(Request::new(request.clone()))
                    .await;
                codes.push(match answer {
                    Ok(response) => Code::try_from(response.get_ref().overall_code).unwrap(),
                    Err(_) => Code::Unknown,
                });
            }
            codes
        })
    });
    (codes, handle.render())
}

/// The value of `name{labels}` in `text`.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let sample = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&sample)?.parse().ok())
}

#[test]
fn within_near_and_over_limit_count_hits_as_envoyproxy_does() {
    let ip = [("remote_address", "10.0.0.1")];
    // Limit 10, near-limit threshold 8: 7 hits within; 2 more, within and one of them near;
    // 3 more from 9: over (2 of them), the one up to the limit near.
    let (codes, text) = answer(
        &server(),
        &[request(&ip, 7), request(&ip, 2), request(&ip, 3)],
    );
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::OverLimit]);
    let rule = r#"domain="edge",key1="remote_address""#;
    assert_eq!(
        value(&text, metrics::TOTAL_HITS, rule),
        Some(12.0),
        "{text}"
    );
    assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(9.0));
    assert_eq!(value(&text, metrics::NEAR_LIMIT, rule), Some(2.0));
    assert_eq!(value(&text, metrics::OVER_LIMIT, rule), Some(2.0));
    assert_eq!(value(&text, metrics::SHADOW_MODE, rule), None);
    let method = r#"grpc_method="ShouldRateLimit""#;
    assert_eq!(value(&text, metrics::TOTAL_REQUESTS, method), Some(3.0));
    assert_eq!(
        value(&text, &format!("{}_count", metrics::RESPONSE_TIME), method),
        Some(3.0)
    );
    assert_eq!(
        value(&text, metrics::REQUESTS, r#"code="over_limit""#),
        Some(1.0)
    );
}

#[test]
fn the_near_limit_ratio_is_a_setting() {
    let ip = [("remote_address", "10.0.0.1")];
    // Ratio 0.5: the threshold of 10 is 5, and the sixth hit is near.
    let (_, text) = answer(&server().with_near_limit_ratio(0.5), &[request(&ip, 6)]);
    let rule = r#"domain="edge",key1="remote_address""#;
    assert_eq!(value(&text, metrics::NEAR_LIMIT, rule), Some(1.0), "{text}");
    assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(6.0));
}

#[test]
fn shadow_mode_counts_its_over_limit_hits_and_answers_ok() {
    let login = [("path", "/login")];
    let (codes, text) = answer(
        &server(),
        &[request(&login, 1), request(&login, 1), request(&login, 1)],
    );
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::Ok]);
    let rule = r#"domain="edge",key1="path_/login""#;
    assert_eq!(value(&text, metrics::TOTAL_HITS, rule), Some(3.0), "{text}");
    assert_eq!(value(&text, metrics::OVER_LIMIT, rule), Some(1.0));
    assert_eq!(value(&text, metrics::SHADOW_MODE, rule), Some(1.0));
    assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(2.0));
    // One request of the three was over in shadow mode.
    let shadow_requests = format!("{} 1", metrics::SHADOW_OVER_LIMIT);
    assert!(text.lines().any(|line| line == shadow_requests), "{text}");
}

#[test]
fn a_two_level_rule_has_key2() {
    let (_, text) = answer(
        &server(),
        &[request(&[("tenant", "acme"), ("plan", "free")], 1)],
    );
    let rule = r#"domain="edge",key1="tenant_acme",key2="plan""#;
    assert_eq!(value(&text, metrics::TOTAL_HITS, rule), Some(1.0), "{text}");
    assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(1.0));
}

#[test]
fn detailed_metric_and_value_to_metric_name_the_request_value() {
    let (_, text) = answer(
        &server(),
        &[
            request(&[("user", "alice")], 1),
            request(&[("user", "bob")], 2),
            request(&[("route", "api/v1")], 1),
        ],
    );
    // Without `detailed_metric` both would be key1="user".
    for (user, hits) in [("alice", 1.0), ("bob", 2.0)] {
        let rule = format!(r#"domain="edge",key1="user_{user}""#);
        assert_eq!(
            value(&text, metrics::TOTAL_HITS, &rule),
            Some(hits),
            "{text}"
        );
    }
    assert!(!text.contains(r#"key1="user""#), "{text}");
    // Without `value_to_metric` it would be the pattern, key1="route_api*".
    let rule = r#"domain="edge",key1="route_api/v1""#;
    assert_eq!(value(&text, metrics::TOTAL_HITS, rule), Some(1.0), "{text}");
}

#[test]
fn errors_are_service_errors() {
    let mut empty = request(&[("remote_address", "10.0.0.1")], 1);
    empty.domain.clear();
    let (codes, text) = answer(&server(), &[empty]);
    assert_eq!(codes, [Code::Unknown]);
    assert_eq!(
        value(
            &text,
            metrics::SHOULD_RATE_LIMIT_ERROR,
            r#"err_type="service_error""#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            metrics::TOTAL_REQUESTS,
            r#"grpc_method="ShouldRateLimit""#
        ),
        Some(1.0)
    );
    // Nothing was decided: no rule counted anything.
    assert!(!text.contains(metrics::TOTAL_HITS), "{text}");
}
