//! envoyproxy/ratelimit's documented examples (its README's "Examples" 1 to 9): each
//! configuration exactly as documented, asked the requests the README describes, over gRPC of
//! this service, on the memory store and on Redis (`REDIS_URL`, 127.0.0.1:6379 by default).
//!
//! Where envoyproxy/ratelimit and this service differ on purpose, the test says so: all of a
//! request's descriptors are decided all or nothing here (a request over one limit debits none),
//! and per-second limits are GCRA buckets, so they are checked as bounds (`burst + rate × w`
//! over the time the requests took), never as a count that depends on the machine's speed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use ratelimit_core::{FailurePolicy, Limiter, MemoryStore, Policy};
use support::{Service, ask, descriptor, serve, temp_dir, unique};
use tonic::transport::Channel;

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

/// Where the buckets live.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// The service under `yaml`, whose domain `name` is renamed to a name of this run's own (Redis
/// keeps buckets between runs), on `backend`. The failure policy is `Closed`, so that a Redis
/// that does not answer fails these tests instead of being replaced by local buckets.
async fn service(
    backend: Backend,
    name: &str,
    yaml: &str,
) -> (RateLimitServiceClient<Channel>, String) {
    let domain = unique(name);
    let yaml = yaml.replacen(
        &format!("domain: {name}\n"),
        &format!("domain: {domain}\n"),
        1,
    );
    assert!(yaml.contains(&domain), "the example names domain {name}");
    let limiter = match backend {
        Backend::Memory => Limiter::new(MemoryStore::new()),
        Backend::Redis => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let store = ratelimit_redis::RedisStore::connect(&url)
                .await
                .expect("Redis is not running: scripts/services.sh up");
            Limiter::from_arc(Arc::new(store))
        }
    }
    .with_failure_policy(FailurePolicy::Closed);
    (serve(&yaml, limiter).await, domain)
}

async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
) -> RateLimitResponse {
    ask(client, domain, descriptors, 0).await.unwrap()
}

/// The limit a status reports, as (requests per unit, unit).
fn limit_of(r: &RateLimitResponse, at: usize) -> Option<(u32, i32)> {
    r.statuses[at]
        .current_limit
        .as_ref()
        .map(|l| (l.requests_per_unit, l.unit))
}

fn state(r: &RateLimitResponse, at: usize) -> (i32, u32) {
    (r.statuses[at].code, r.statuses[at].limit_remaining)
}

/// Sends the same request `n` times as fast as it goes: how many were admitted (overall `OK`),
/// and checks the count against `policy`'s bound over the time they took, and against the
/// burst that a full bucket admits at once.
async fn burst(
    client: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: &[RateLimitDescriptor],
    n: u64,
    policy: Policy,
) -> u64 {
    let start = Instant::now();
    let mut admitted = 0;
    for _ in 0..n {
        if call(client, domain, descriptors.to_vec())
            .await
            .overall_code
            == OK
        {
            admitted += 1;
        }
    }
    let bound = policy.max_admitted(start.elapsed());
    assert!(
        admitted <= bound,
        "{admitted} admitted against a bound of {bound}"
    );
    assert!(
        admitted >= u64::from(policy.burst()).min(n),
        "only {admitted} of a full bucket of {}",
        policy.burst()
    );
    admitted
}

/// Example 1: two values of one key, 500 a second each, in buckets of their own; another value
/// has no limit.
async fn example_1(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "mongo_cps",
        r#"
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500

  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
"#,
    )
    .await;
    for value in ["users", "default"] {
        let r = call(
            &mut client,
            &domain,
            vec![descriptor(&[("database", value)])],
        )
        .await;
        assert_eq!(limit_of(&r, 0), Some((500, Unit::Second as i32)), "{value}");
        assert_eq!(state(&r, 0), (OK, 499), "{value}");
    }
    let r = call(
        &mut client,
        &domain,
        vec![descriptor(&[("database", "other")])],
    )
    .await;
    assert_eq!((r.overall_code, limit_of(&r, 0)), (OK, None));
}

/// Example 2: 5 marketing messages a day per number, 100 messages a day per number, both asked
/// in one request: the answer is over the limit when either is.
async fn example_2(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "messaging",
        r#"
domain: messaging
descriptors:
  # Only allow 5 marketing messages a day
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5

  # Only allow 100 messages a day to any unique phone number
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
"#,
    )
    .await;
    let both = |number: &str| {
        vec![
            descriptor(&[("message_type", "marketing"), ("to_number", number)]),
            descriptor(&[("to_number", number)]),
        ]
    };
    for sent in 1..=5 {
        let r = call(&mut client, &domain, both("2061111111")).await;
        assert_eq!(r.overall_code, OK, "message {sent}");
        assert_eq!(state(&r, 0), (OK, 5 - sent), "message {sent}");
        assert_eq!(state(&r, 1), (OK, 100 - sent), "message {sent}");
        assert_eq!(limit_of(&r, 0), Some((5, Unit::Day as i32)));
    }
    let r = call(&mut client, &domain, both("2061111111")).await;
    assert_eq!((r.overall_code, r.statuses[0].code), (OVER, OVER));
    // Different here: all or nothing, so the refused sixth message took none of the 100.
    // (envoyproxy/ratelimit would have counted it: 94 left after this one, not 94 before it.)
    let r = call(
        &mut client,
        &domain,
        vec![descriptor(&[("to_number", "2061111111")])],
    )
    .await;
    assert_eq!(state(&r, 0), (OK, 94));
    // Another number has its own five.
    let r = call(&mut client, &domain, both("2062222222")).await;
    assert_eq!((state(&r, 0), state(&r, 1)), ((OK, 4), (OK, 99)));
}

/// Example 3: the most specific match at the request's level wins: one address is blocked
/// (`requests_per_unit: 0`), every other one has 10 a second.
async fn example_3(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "edge_proxy_per_ip",
        r#"
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10

  # Black list IP
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
"#,
    )
    .await;
    for _ in 0..3 {
        let r = call(
            &mut client,
            &domain,
            vec![descriptor(&[("remote_address", "50.0.0.5")])],
        )
        .await;
        assert_eq!((r.overall_code, state(&r, 0)), (OVER, (OVER, 0)));
        assert_eq!(limit_of(&r, 0), Some((0, Unit::Second as i32)));
    }
    let any = [descriptor(&[("remote_address", "50.0.0.1")])];
    burst(
        &mut client,
        &domain,
        &any,
        25,
        Policy::per_second(10).unwrap(),
    )
    .await;
}

/// Example 4: a limit applies only at the request's depth.
async fn example_4(backend: Backend) {
    let two = || vec![descriptor(&[("key", "value"), ("subkey", "subvalue")])];
    let one = || vec![descriptor(&[("key", "value")])];
    let (mut client, domain) = service(
        backend,
        "example4",
        r#"
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit:
      requests_per_unit: 300
      unit: second
"#,
    )
    .await;
    let r = call(&mut client, &domain, two()).await;
    assert_eq!(
        (r.overall_code, limit_of(&r, 0)),
        (OK, None),
        "two entries, one level"
    );
    let r = call(&mut client, &domain, one()).await;
    assert_eq!(limit_of(&r, 0), Some((300, Unit::Second as i32)));

    let (mut client, domain) = service(
        backend,
        "example4",
        r#"
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit:
          requests_per_unit: 300
          unit: second
"#,
    )
    .await;
    let r = call(&mut client, &domain, two()).await;
    assert_eq!(limit_of(&r, 0), Some((300, Unit::Second as i32)));
    assert_eq!(state(&r, 0), (OK, 299));
    let r = call(&mut client, &domain, one()).await;
    assert_eq!(limit_of(&r, 0), None, "one entry, two levels");
}

/// Example 5: an unlimited descriptor is OK with `LimitRemaining` at its maximum and no limit.
async fn example_5(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "internal",
        r#"
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true

  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
"#,
    )
    .await;
    for _ in 0..3 {
        let r = call(&mut client, &domain, vec![descriptor(&[("ldap", "x")])]).await;
        assert_eq!((r.overall_code, state(&r, 0)), (OK, (OK, u32::MAX)));
        assert_eq!(limit_of(&r, 0), None);
    }
    let r = call(&mut client, &domain, vec![descriptor(&[("azure", "x")])]).await;
    assert_eq!(limit_of(&r, 0), Some((100, Unit::Minute as i32)));
    assert_eq!(state(&r, 0), (OK, 99));
}

/// Example 6: user-a is in shadow mode and never limited; user-b is limited to 20 a second.
async fn example_6(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "example6",
        r#"
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
"#,
    )
    .await;
    let user = |name: &str| vec![descriptor(&[("service", "auth-service"), ("user", name)])];
    let mut reported_over = false;
    for _ in 0..30 {
        let r = call(&mut client, &domain, user("user-a")).await;
        assert_eq!((r.overall_code, r.statuses[0].code), (OK, OK));
        assert_eq!(limit_of(&r, 0), Some((10, Unit::Second as i32)));
        reported_over |= r.statuses[0].limit_remaining == 0;
    }
    assert!(reported_over, "30 requests never used up 10 a second");
    burst(
        &mut client,
        &domain,
        &user("user-b"),
        45,
        Policy::per_second(20).unwrap(),
    )
    .await;
}

/// Example 7: when both descriptors match, the replacing limit (10 a second) applies and the
/// replaced one (5 a second) is neither checked nor changed.
async fn example_7(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "example7",
        r#"
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
"#,
    )
    .await;
    let first = || descriptor(&[("key_1", "value_1"), ("user", "bkthomps")]);
    let second = || descriptor(&[("key_2", "value_2"), ("user", "bkthomps")]);
    // Ten a second, not five, for the pair (burst checks that a full bucket admits ten).
    burst(
        &mut client,
        &domain,
        &[first(), second()],
        25,
        Policy::per_second(10).unwrap(),
    )
    .await;
    let r = call(&mut client, &domain, vec![first(), second()]).await;
    assert_eq!(limit_of(&r, 0), None, "the replaced limit reports nothing");
    assert_eq!(limit_of(&r, 1), Some((10, Unit::Second as i32)));
    // The replaced limit's bucket was never touched: full, five at once.
    let r = call(&mut client, &domain, vec![first()]).await;
    assert_eq!(limit_of(&r, 0), Some((5, Unit::Second as i32)));
    assert_eq!(state(&r, 0), (OK, 4));
}

/// Example 8: `detailed_metric` changes statistics only; every unlisted value has its own 10 a
/// minute and the listed one 20.
async fn example_8(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "example8",
        r#"
domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 20
"#,
    )
    .await;
    for value in ["unspecified_value", "unspecified_value2"] {
        let r = call(&mut client, &domain, vec![descriptor(&[("key1", value)])]).await;
        assert_eq!(limit_of(&r, 0), Some((10, Unit::Minute as i32)), "{value}");
        assert_eq!(state(&r, 0), (OK, 9), "{value}");
    }
    let r = call(
        &mut client,
        &domain,
        vec![descriptor(&[("key1", "value1")])],
    )
    .await;
    assert_eq!(limit_of(&r, 0), Some((20, Unit::Minute as i32)));
    assert_eq!(state(&r, 0), (OK, 19));
}

/// Example 9: a wildcard value; each value it matches has its own 20 a minute.
async fn example_9(backend: Backend) {
    let (mut client, domain) = service(
        backend,
        "example9",
        r#"
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit:
      unit: minute
      requests_per_unit: 20
"#,
    )
    .await;
    for value in ["value_1", "value_2", "value"] {
        let r = call(&mut client, &domain, vec![descriptor(&[("key1", value)])]).await;
        assert_eq!(limit_of(&r, 0), Some((20, Unit::Minute as i32)), "{value}");
        assert_eq!(state(&r, 0), (OK, 19), "{value}");
    }
    let r = call(&mut client, &domain, vec![descriptor(&[("key1", "valu")])]).await;
    assert_eq!(limit_of(&r, 0), None);
}

macro_rules! on_both_stores {
    ($($example:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $example() {
                    super::$example(super::Backend::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $example() {
                    super::$example(super::Backend::Redis).await;
                }
            )*
        }
    };
}

on_both_stores!(
    example_1, example_2, example_3, example_4, example_5, example_6, example_7, example_8,
    example_9,
);

/// Several files in a directory, one domain each; with `MERGE_DOMAIN_CONFIG` true, files of the
/// same domain are merged, and otherwise the service refuses to start, naming both files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_domain_config_merges_files_of_one_domain() {
    let dir = temp_dir("merge");
    let domain = unique("merged");
    let file = |key: &str, count: u32| {
        format!(
            "domain: {domain}\ndescriptors:\n  - key: {key}\n    rate_limit: {{ unit: hour, requests_per_unit: {count} }}\n"
        )
    };
    std::fs::write(dir.join("a.yaml"), file("a", 1)).unwrap();
    std::fs::write(dir.join("b.yaml"), file("b", 2)).unwrap();
    std::fs::write(dir.join("other.yaml"), "domain: other\n").unwrap();
    let path = dir.to_str().unwrap();
    let refused = Service::start_with_env(&["--config", path], &[("MERGE_DOMAIN_CONFIG", "false")])
        .await
        .err()
        .expect("a domain in two files was loaded without MERGE_DOMAIN_CONFIG");
    assert!(
        refused.contains("a.yaml") && refused.contains("b.yaml"),
        "{refused}"
    );
    let refused = Service::start_with_env(&["--config", path], &[("MERGE_DOMAIN_CONFIG", "yes")])
        .await
        .err()
        .expect("MERGE_DOMAIN_CONFIG=yes was taken as a boolean");
    assert!(refused.contains("MERGE_DOMAIN_CONFIG"), "{refused}");
    let service = Service::start_with_env(&["--config", path], &[("MERGE_DOMAIN_CONFIG", "true")])
        .await
        .unwrap();
    let mut client = service.client().await;
    let r = ask(
        &mut client,
        &domain,
        vec![descriptor(&[("a", "x")]), descriptor(&[("b", "y")])],
        0,
    )
    .await
    .unwrap();
    assert_eq!(limit_of(&r, 0), Some((1, Unit::Hour as i32)));
    assert_eq!(limit_of(&r, 1), Some((2, Unit::Hour as i32)));
    drop(service);
    std::fs::remove_dir_all(&dir).unwrap();
}
