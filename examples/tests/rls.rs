//! The rate limit service over gRPC on loopback, called with the request shapes Envoy sends.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use envoy_types::pb::google::protobuf::value::Kind;
use ratelimit_core::{Limiter, MemoryStore};
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::service::RateLimitServer;
use support::descriptor;
use tonic::transport::Channel;

mod common;
mod support;

const CONFIG: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: second, requests_per_unit: 10 }
  - key: route
    value: /cheap
    rate_limit: { unit: hour, requests_per_unit: 100 }
  - key: route
    value: /scarce
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: path
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 1 }
    shadow_mode: true
  - key: healthcheck
    rate_limit: { unlimited: true }
"#;

/// The service in this process, with the handle that swaps its configuration.
async fn serve(
    config: &str,
) -> (
    RateLimitServiceClient<Channel>,
    Arc<parking_lot::RwLock<Arc<Config>>>,
) {
    let server = RateLimitServer::new(
        Config::parse("edge.yaml", config).unwrap(),
        Arc::new(Limiter::new(MemoryStore::new())),
    );
    let handle = server.config_handle();
    (support::serve_server(server).await, handle)
}

/// `ShouldRateLimit` in the domain `edge`, which every test's configuration names.
async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> RateLimitResponse {
    support::ask(client, "edge", descriptors, hits_addend)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_envoy_expects() {
    let (mut client, _) = serve(CONFIG).await;
    let first = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.0.0.1")])],
        0,
    )
    .await;
    assert_eq!(first.overall_code, Code::Ok as i32);
    let status = &first.statuses[0];
    assert_eq!(status.code, Code::Ok as i32);
    let limit = status.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (10, Unit::Second as i32)
    );
    assert_eq!(status.limit_remaining, 9);
    let reset = status.duration_until_reset.unwrap();
    assert!(reset.seconds == 0 && reset.nanos > 0, "{reset:?}");
    // Nine more pass, the eleventh is over the limit; another address has its own bucket.
    for _ in 0..9 {
        let r = ask(
            &mut client,
            vec![descriptor(&[("remote_address", "10.0.0.1")])],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    let over = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.0.0.1")])],
        0,
    )
    .await;
    assert_eq!(over.overall_code, Code::OverLimit as i32);
    assert_eq!(over.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(over.statuses[0].limit_remaining, 0);
    let other = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.0.0.2")])],
        0,
    )
    .await;
    assert_eq!(other.overall_code, Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_of_a_request_are_all_or_nothing() {
    let (mut client, _) = serve(CONFIG).await;
    let both = || {
        vec![
            descriptor(&[("route", "/cheap")]),
            descriptor(&[("route", "/scarce")]),
        ]
    };
    assert_eq!(
        ask(&mut client, both(), 0).await.overall_code,
        Code::Ok as i32
    );
    let second = ask(&mut client, both(), 0).await;
    assert_eq!(second.overall_code, Code::OverLimit as i32);
    assert_eq!(
        second.statuses[0].code,
        Code::Ok as i32,
        "/cheap alone would pass"
    );
    assert_eq!(second.statuses[1].code, Code::OverLimit as i32);
    // The refused request took nothing from /cheap: 100 - 1 (first) - 1 (this one) left.
    let cheap = ask(&mut client, vec![descriptor(&[("route", "/cheap")])], 0).await;
    assert_eq!(cheap.statuses[0].limit_remaining, 98);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_addend_is_the_cost() {
    let (mut client, _) = serve(CONFIG).await;
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.1.0.1")])],
        4,
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 6);
    // A per-descriptor hits_addend wins over the request's.
    let mut d = descriptor(&[("remote_address", "10.1.0.1")]);
    d.hits_addend = Some(UInt64Value { value: 5 });
    let r = ask(&mut client, vec![d], 4).await;
    assert_eq!(r.statuses[0].limit_remaining, 1);
    // More than the limit can ever hold: over limit, and nothing taken.
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.1.0.1")])],
        11,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.1.0.1")])],
        1,
    )
    .await;
    assert_eq!(
        (r.overall_code, r.statuses[0].limit_remaining),
        (Code::Ok as i32, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_unlimited_and_unknown_descriptors_never_limit() {
    let (mut client, _) = serve(CONFIG).await;
    for call in 0..3 {
        let r = ask(
            &mut client,
            vec![
                descriptor(&[("path", "/login")]),
                descriptor(&[("healthcheck", "lb")]),
                descriptor(&[("user", "alice")]),
            ],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32, "call {call}");
        // The shadow descriptor is OK even over its limit (as envoyproxy/ratelimit reports
        // it: Envoy reads the statuses too), with nothing remaining once over.
        assert_eq!(r.statuses[0].code, Code::Ok as i32, "call {call}");
        assert_eq!(r.statuses[0].limit_remaining, 0, "call {call}");
        assert!(r.statuses[0].current_limit.is_some(), "call {call}");
        assert_eq!(r.statuses[1].code, Code::Ok as i32);
        assert_eq!(r.statuses[2].code, Code::Ok as i32);
        assert!(r.statuses[2].current_limit.is_none());
        assert!(r.dynamic_metadata.is_none(), "no quota mode, no metadata");
    }
    let unknown = client
        .should_rate_limit(RateLimitRequest {
            domain: "nobody".into(),
            descriptors: vec![descriptor(&[("remote_address", "10.0.0.1")])],
            hits_addend: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.overall_code, Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_configuration_applies_to_the_next_request() {
    let (mut client, handle) = serve(CONFIG).await;
    let tighter = CONFIG.replace("requests_per_unit: 10 }", "requests_per_unit: 1 }");
    *handle.write() = Arc::new(Config::parse("edge.yaml", &tighter).unwrap());
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.2.0.1")])],
        0,
    )
    .await;
    assert_eq!(
        r.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        1
    );
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.2.0.1")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_anomaly_monitor() {
    let monitor = Arc::new(ratelimit_anomaly::Monitor::default());
    let server = RateLimitServer::new(
        Config::parse("edge.yaml", CONFIG).unwrap(),
        Arc::new(Limiter::new(MemoryStore::new())),
    )
    .with_monitor(monitor.clone());
    for _ in 0..12 {
        server
            .decide(&RateLimitRequest {
                domain: "edge".into(),
                descriptors: vec![descriptor(&[("remote_address", "10.7.7.7")])],
                hits_addend: 0,
            })
            .await
            .unwrap();
    }
    let stats = monitor.tick();
    assert_eq!((stats.requests, stats.limited), (12, 2));
    let clients = stats.dimension(ratelimit_anomaly::Dimension::Client);
    assert_eq!(clients.heavy[0].key, "10.7.7.7");
}

/// envoyproxy/ratelimit's configuration features, each over gRPC.
const FEATURES: &str = r#"
domain: edge
descriptors:
  - key: path
    value: /api/*/orders/*
    rate_limit: { unit: HOUR, requests_per_unit: 2 }
  - key: path
    value: /api/admin/orders/x
    rate_limit: { unit: Hour, requests_per_unit: 5 }
  - key: remote_address
    value: 50.0.0.5
    rate_limit: { unit: second, requests_per_unit: 0 }
  - key: remote_address
    rate_limit: { unit: hour, requests_per_unit: 3 }
  - key: category
    value: read
    rate_limit: { name: read, unit: hour, requests_per_unit: 1 }
  - key: endpoint
    value: /books
    rate_limit:
      name: books
      unit: hour
      requests_per_unit: 4
      replaces: [{ name: read }]
  - key: soft
    quota_mode: true
    rate_limit: { unit: hour, requests_per_unit: 1 }
"#;

fn remaining(r: &RateLimitResponse, at: usize) -> (i32, u32) {
    (r.statuses[at].code, r.statuses[at].limit_remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_anywhere_and_exact_values_win() {
    let (mut client, _) = serve(FEATURES).await;
    let path = |p: &str| descriptor(&[("path", p)]);
    // Each value the wildcard matches has a bucket of its own, of 2.
    for value in ["/api/1/orders/9", "/api/2/orders/"] {
        let r = ask(&mut client, vec![path(value)], 0).await;
        assert_eq!(remaining(&r, 0), (Code::Ok as i32, 1), "{value}");
        let limit = r.statuses[0].current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (2, Unit::Hour as i32)
        );
    }
    // The exact value beats the wildcard it also matches.
    let r = ask(&mut client, vec![path("/api/admin/orders/x")], 0).await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 4));
    // Not matched: no limit.
    let r = ask(&mut client, vec![path("/api/1/order/9")], 0).await;
    assert!(r.statuses[0].current_limit.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_requests_per_unit_refuses_everything_and_debits_nothing_else() {
    let (mut client, _) = serve(FEATURES).await;
    for _ in 0..3 {
        let r = ask(
            &mut client,
            vec![
                descriptor(&[("remote_address", "50.0.0.5")]),
                descriptor(&[("path", "/api/z/orders/z")]),
            ],
            0,
        )
        .await;
        assert_eq!(r.overall_code, Code::OverLimit as i32);
        assert_eq!(remaining(&r, 0), (Code::OverLimit as i32, 0));
        let reset = r.statuses[0].duration_until_reset.unwrap();
        assert!(reset.seconds <= 1 && (reset.seconds, reset.nanos) > (0, 0));
    }
    // All or nothing: the wildcard's bucket was never debited.
    let r = ask(
        &mut client,
        vec![descriptor(&[("path", "/api/z/orders/z")])],
        0,
    )
    .await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_limit_is_neither_checked_nor_debited() {
    let (mut client, _) = serve(FEATURES).await;
    let both = || {
        vec![
            descriptor(&[("category", "read")]),
            descriptor(&[("endpoint", "/books")]),
        ]
    };
    for left in (0..4).rev() {
        let r = ask(&mut client, both(), 0).await;
        assert_eq!(r.overall_code, Code::Ok as i32, "{left} left");
        // The replaced descriptor reports no limit; the replacing one counts down.
        assert!(r.statuses[0].current_limit.is_none());
        assert_eq!(remaining(&r, 1), (Code::Ok as i32, left));
        assert_eq!(r.statuses[1].current_limit.as_ref().unwrap().name, "books");
    }
    let r = ask(&mut client, both(), 0).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // Alone, `read` applies, and its bucket is untouched by the four requests above.
    let r = ask(&mut client, vec![descriptor(&[("category", "read")])], 0).await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 0));
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_mode_reports_but_never_limits() {
    let (mut client, _) = serve(FEATURES).await;
    for call in 0..3 {
        let r = ask(&mut client, vec![descriptor(&[("soft", "s")])], 0).await;
        assert_eq!(r.overall_code, Code::Ok as i32, "call {call}");
        // One an hour: nothing left after the first, over it after that, and OK throughout.
        assert_eq!(remaining(&r, 0), (Code::Ok as i32, 0), "call {call}");
        // envoyproxy/ratelimit's metadata: quota mode on, and this descriptor (index 0) over
        // its quota from the second call on.
        let metadata = r.dynamic_metadata.as_ref().unwrap();
        let violations: Vec<f64> = match &metadata.fields["quotaModeViolations"].kind {
            Some(Kind::ListValue(list)) => list
                .values
                .iter()
                .map(|v| match v.kind {
                    Some(Kind::NumberValue(n)) => n,
                    _ => panic!("{v:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        let expected: &[f64] = if call == 0 { &[] } else { &[0.0] };
        assert_eq!(violations, expected, "call {call}");
        assert_eq!(
            metadata.fields["quotaModeEnabled"].kind,
            Some(Kind::BoolValue(true))
        );
        assert!(r.statuses[0].current_limit.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_hits_addend_of_zero_only_checks() {
    let (mut client, _) = serve(FEATURES).await;
    let check = || {
        let mut d = descriptor(&[("remote_address", "10.9.0.1")]);
        d.hits_addend = Some(UInt64Value { value: 0 });
        d
    };
    for _ in 0..5 {
        let r = ask(&mut client, vec![check()], 0).await;
        // What is left now: all three.
        assert_eq!(remaining(&r, 0), (Code::Ok as i32, 3));
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    // Five checks took nothing: three requests are still admitted.
    for left in (0..3).rev() {
        let r = ask(
            &mut client,
            vec![descriptor(&[("remote_address", "10.9.0.1")])],
            0,
        )
        .await;
        assert_eq!(remaining(&r, 0), (Code::Ok as i32, left));
    }
    // A check of a full bucket is over the limit, and denies the request with it; the other
    // descriptor's bucket is not debited.
    let r = ask(
        &mut client,
        vec![check(), descriptor(&[("path", "/api/c/orders/c")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    let r = ask(
        &mut client,
        vec![descriptor(&[("path", "/api/c/orders/c")])],
        0,
    )
    .await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_applies_where_no_rule_matches_in_its_own_bucket() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
    let (mut client, _) = serve(FEATURES).await;
    let own = |entries: &[(&str, &str)]| {
        let mut d = descriptor(entries);
        d.limit = Some(RateLimitOverride {
            requests_per_unit: 2,
            unit: Unit::Minute as i32,
        });
        d
    };
    // No rule for `user`: the request's own limit applies.
    for left in [1, 0] {
        let r = ask(&mut client, vec![own(&[("user", "u1")])], 0).await;
        assert_eq!(remaining(&r, 0), (Code::Ok as i32, left));
        let limit = r.statuses[0].current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (2, Unit::Minute as i32)
        );
    }
    let r = ask(&mut client, vec![own(&[("user", "u1")])], 0).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // Where a rule matches, the override replaces it, in a bucket of its own: the rule's
    // bucket (3 an hour) is untouched.
    let r = ask(&mut client, vec![own(&[("remote_address", "10.9.0.2")])], 0).await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 1));
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.9.0.2")])],
        0,
    )
    .await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 2));
    // In a domain nobody configured, nothing applies, as in envoyproxy/ratelimit.
    let r = client
        .should_rate_limit(RateLimitRequest {
            domain: "nobody".into(),
            descriptors: vec![own(&[("user", "u1")])],
            hits_addend: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert!(r.statuses[0].current_limit.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_above_the_whole_limit_still_says_when_it_resets() {
    let (mut client, _) = serve(FEATURES).await;
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.9.0.3")])],
        1,
    )
    .await;
    assert_eq!(remaining(&r, 0), (Code::Ok as i32, 2));
    let r = ask(
        &mut client,
        vec![descriptor(&[("remote_address", "10.9.0.3")])],
        4,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(remaining(&r, 0), (Code::OverLimit as i32, 0));
    let reset = r.statuses[0].duration_until_reset.unwrap();
    // One of three an hour is in use: full again within 20 minutes, and not at once.
    assert!(reset.seconds > 1100 && reset.seconds < 1200, "{reset:?}");
}
