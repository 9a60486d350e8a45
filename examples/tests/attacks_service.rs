//! Attacks on `ratelimit-service`, over gRPC against the running service. Envoy admits a request
//! on any error from the service (unless `failure_mode_deny` is set), so every attack here is
//! one way a client could turn a decision into an error, two keys into one, or the limiter into
//! nothing; each test names the bound it defends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::google::protobuf::UInt64Value;
use ratelimit_core::{Limiter, MemoryStore};
use ratelimit_examples::envoy::config::{Config, ConfigError};
use ratelimit_examples::envoy::service::RateLimitServer;
use support::{Service, ask, descriptor, eventually, private_redis, serve, temp_dir, unique};

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

fn per_hour(key: &str, count: u32) -> String {
    format!(
        "domain: edge\ndescriptors:\n  - key: {key}\n    rate_limit: {{ unit: hour, requests_per_unit: {count} }}\n"
    )
}

/// Bound: a descriptor value of any length is one key, admitting at most `burst + rate × w`
/// (here 3 in the test's few seconds of an hour), never an error that Envoy would admit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_value_is_limited_not_an_error() {
    let mut client = serve(
        &per_hour("remote_address", 3),
        Limiter::new(MemoryStore::new()),
    )
    .await;
    for length in [300, 1_025, 100_000] {
        let value = "a".repeat(length);
        let mut admitted = 0;
        for _ in 0..6 {
            let answer = ask(
                &mut client,
                "edge",
                vec![descriptor(&[("remote_address", &value)])],
                0,
            )
            .await
            .unwrap_or_else(|e| panic!("a {length}-byte value got an error: {e}"));
            admitted += usize::from(answer.overall_code == OK);
        }
        assert_eq!(admitted, 3, "a {length}-byte value");
    }
    // Two long values that differ only past the readable part have buckets of their own.
    let (a, b) = ("x".repeat(400) + "a", "x".repeat(400) + "b");
    for value in [&a, &b] {
        let answer = ask(
            &mut client,
            "edge",
            vec![descriptor(&[("remote_address", value)])],
            0,
        )
        .await
        .unwrap();
        assert_eq!(answer.overall_code, OK);
    }
}

/// Bound: a descriptor repeated in one request debits its bucket once per repeat, so a key
/// admits at most `burst + rate × w` hits however a client packs them (here 5 per hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_descriptors_are_each_counted() {
    let mut client = serve(
        &per_hour("remote_address", 5),
        Limiter::new(MemoryStore::new()),
    )
    .await;
    let three = || vec![descriptor(&[("remote_address", "10.0.0.1")]); 3];
    let first = ask(&mut client, "edge", three(), 0).await.unwrap();
    assert_eq!(first.overall_code, OK);
    assert_eq!(first.statuses.len(), 3, "one status per descriptor");
    assert!(first.statuses.iter().all(|s| s.limit_remaining == 2));
    // Three more do not fit the two left: over limit, and nothing taken.
    let second = ask(&mut client, "edge", three(), 0).await.unwrap();
    assert_eq!(second.overall_code, OVER);
    let two = vec![descriptor(&[("remote_address", "10.0.0.1")]); 2];
    let third = ask(&mut client, "edge", two, 0).await.unwrap();
    assert_eq!(third.overall_code, OK);
    assert_eq!(third.statuses[0].limit_remaining, 0);
    // More repeats than the burst can ever hold, on a fresh key: over limit.
    let six = vec![descriptor(&[("remote_address", "10.0.0.2")]); 6];
    assert_eq!(
        ask(&mut client, "edge", six, 0).await.unwrap().overall_code,
        OVER
    );
    let one = vec![descriptor(&[("remote_address", "10.0.0.2")])];
    let after = ask(&mut client, "edge", one, 0).await.unwrap();
    assert_eq!(
        (after.overall_code, after.statuses[0].limit_remaining),
        (OK, 4),
        "the impossible request took nothing"
    );
}

/// Bound: a request with more descriptors than one store call decides still gets a decision,
/// and each of its keys admits at most `burst + rate × w` (here 1 per hour). A denial found by
/// any chunk debits no chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_sixteen_descriptors_are_decided() {
    let mut client = serve(
        &per_hour("remote_address", 1),
        Limiter::new(MemoryStore::new()),
    )
    .await;
    let values: Vec<String> = (0..40).map(|i| format!("10.1.0.{i}")).collect();
    let all = || {
        values
            .iter()
            .map(|v| descriptor(&[("remote_address", v)]))
            .collect::<Vec<_>>()
    };
    // The last key is spent first: the request of 40 is over limit because of it alone.
    let last = vec![descriptor(&[("remote_address", &values[39])])];
    assert_eq!(
        ask(&mut client, "edge", last, 0)
            .await
            .unwrap()
            .overall_code,
        OK
    );
    let over = ask(&mut client, "edge", all(), 0).await.unwrap();
    assert_eq!(over.overall_code, OVER);
    assert_eq!(over.statuses.len(), 40);
    assert_eq!(over.statuses[39].code, OVER);
    // The 39 others were not debited by the refused request.
    let others = || {
        values[..39]
            .iter()
            .map(|v| descriptor(&[("remote_address", v)]))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ask(&mut client, "edge", others(), 0)
            .await
            .unwrap()
            .overall_code,
        OK
    );
    // And now every key is spent: at most one admission each.
    assert_eq!(
        ask(&mut client, "edge", others(), 0)
            .await
            .unwrap()
            .overall_code,
        OVER
    );
    for value in &values {
        let one = vec![descriptor(&[("remote_address", value)])];
        assert_eq!(
            ask(&mut client, "edge", one, 0).await.unwrap().overall_code,
            OVER,
            "{value} admitted twice"
        );
    }
}

/// Bound: a limit the store cannot count (Redis counts microseconds; 2,000,000 per second is an
/// emission interval of 500 ns) never reaches a request: the service refuses it when the file
/// loads, and a reload to it keeps the running configuration. If such a limit does reach the
/// limiter (an unchecked configuration), the request is over limit, never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_finer_than_the_store_is_refused_at_load() {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let domain = unique("fine");
    let fine = format!(
        "domain: {domain}\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: second, requests_per_unit: 2000000 }}\n"
    );
    let coarse = format!(
        "domain: {domain}\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: hour, requests_per_unit: 2 }}\n"
    );

    // In process: refused by the checked constructor; unchecked, over limit on every request.
    let store = ratelimit_redis::RedisStore::connect(&redis_url)
        .await
        .expect("Redis on 6379: run scripts/services.sh up");
    let limiter = Arc::new(Limiter::new(store));
    let config = Config::parse("fine.yaml", &fine).unwrap();
    match RateLimitServer::try_new(config.clone(), limiter.clone()) {
        Err(ConfigError::Unrepresentable { field, .. }) => {
            assert_eq!(field, "descriptors[0].rate_limit");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a 500 ns emission interval was accepted for Redis"),
    }
    let mut client = support::serve_server(RateLimitServer::new(config, limiter)).await;
    for _ in 0..3 {
        let answer = ask(&mut client, &domain, vec![descriptor(&[("k", "v")])], 0)
            .await
            .expect("an unrepresentable limit became an error status");
        assert_eq!(answer.overall_code, OVER);
    }

    // The binary refuses to start with it.
    let dir = temp_dir("rl-fine");
    let path = dir.join("fine.yaml");
    std::fs::write(&path, &fine).unwrap();
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--store",
        "redis",
        "--redis-url",
        &redis_url,
        "--reload-ms",
        "20",
        "--reload-settle-ms",
        "100",
    ];
    let refused = Service::start(&args).await.err().expect("started with it");
    assert!(refused.contains("finer"), "{refused}");

    // A reload to it keeps the running configuration.
    std::fs::write(&path, &coarse).unwrap();
    let service = Service::start(&args).await.unwrap();
    let mut client = service.client().await;
    std::fs::write(&path, &fine).unwrap();
    let judged = eventually(|| async {
        service.metric("ratelimit_service_config_load_error").await == Some(1.0)
    })
    .await;
    assert!(judged, "the reload was never judged");
    let mut admitted = 0;
    for _ in 0..4 {
        let answer = ask(&mut client, &domain, vec![descriptor(&[("k", "v")])], 0)
            .await
            .unwrap();
        admitted += usize::from(answer.overall_code == OK);
    }
    assert_eq!(admitted, 2, "the old limit of 2 per hour stopped applying");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bound: a cost is never truncated or wrapped into a small one. Any `hits_addend` above a
/// limit's burst (request u32::MAX; descriptor u64::MAX, or 2^32 + 5, which a cast would make 5)
/// is over limit, and debits nothing: the key still admits its whole burst afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_hits_addend_is_over_limit() {
    let mut client = serve(
        &per_hour("remote_address", 10),
        Limiter::new(MemoryStore::new()),
    )
    .await;
    let key = || descriptor(&[("remote_address", "10.2.0.1")]);
    let answer = ask(&mut client, "edge", vec![key()], u32::MAX)
        .await
        .unwrap();
    assert_eq!(answer.overall_code, OVER, "request hits_addend u32::MAX");
    for hits in [u64::MAX, (1 << 32) + 5, u64::from(u32::MAX) + 1, 11] {
        let mut d = key();
        d.hits_addend = Some(UInt64Value { value: hits });
        let answer = ask(&mut client, "edge", vec![d], 0).await.unwrap();
        assert_eq!(answer.overall_code, OVER, "descriptor hits_addend {hits}");
    }
    // Two repeats whose sum overflows u64: saturated, still over limit.
    let mut d = key();
    d.hits_addend = Some(UInt64Value { value: u64::MAX });
    let answer = ask(&mut client, "edge", vec![d.clone(), d], 0)
        .await
        .unwrap();
    assert_eq!(answer.overall_code, OVER);
    let mut d = key();
    d.hits_addend = Some(UInt64Value { value: 10 });
    let whole = ask(&mut client, "edge", vec![d], 0).await.unwrap();
    assert_eq!(
        (whole.overall_code, whole.statuses[0].limit_remaining),
        (OK, 0),
        "the refused requests took something"
    );
}

/// Bound: the depth-2 descriptor (t, s) admits its own `burst + rate × w` (here 2 per hour)
/// whatever other descriptors do; a depth-1 value that spells `t|sub=s` is another key and
/// cannot drain it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_spelling_a_deeper_descriptor_cannot_drain_it() {
    let config = "domain: edge\ndescriptors:\n  - key: t\n    rate_limit: { unit: hour, requests_per_unit: 100 }\n    descriptors:\n      - key: sub\n        rate_limit: { unit: hour, requests_per_unit: 2 }\n";
    let mut client = serve(config, Limiter::new(MemoryStore::new())).await;
    for _ in 0..100 {
        let attacker = vec![descriptor(&[("t", "t|sub=s")])];
        assert_eq!(
            ask(&mut client, "edge", attacker, 0)
                .await
                .unwrap()
                .overall_code,
            OK
        );
    }
    let victim = || vec![descriptor(&[("t", "t"), ("sub", "s")])];
    for call in 0..2 {
        let answer = ask(&mut client, "edge", victim(), 0).await.unwrap();
        assert_eq!(
            answer.overall_code, OK,
            "the victim's call {call} was drained"
        );
    }
    assert_eq!(
        ask(&mut client, "edge", victim(), 0)
            .await
            .unwrap()
            .overall_code,
        OVER
    );
}

/// A service over a private Redis that is then killed: (redis, service, config dir).
async fn service_over_dying_redis(policy: &str) -> (common::Process, Service, std::path::PathBuf) {
    service_over_dying_redis_with(policy, 1000, &[]).await
}

async fn service_over_dying_redis_with(
    policy: &str,
    per_hour_limit: u32,
    extra: &[&str],
) -> (common::Process, Service, std::path::PathBuf) {
    let (redis, port) = private_redis().await;
    let dir = temp_dir("rl-dying");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, per_hour("remote_address", per_hour_limit)).unwrap();
    let redis_url = format!("redis://127.0.0.1:{port}");
    let mut args = vec![
        "--config",
        path.to_str().unwrap(),
        "--store",
        "redis",
        "--redis-url",
        &redis_url,
        "--failure-policy",
        policy,
    ];
    args.extend_from_slice(extra);
    let service = Service::start(&args).await.unwrap();
    (redis, service, dir)
}

/// Bound: `burst + rate × w` across all replicas while the store is down. Each of three replicas
/// on local buckets enforces a third of the limit (`--replicas 3`), so a client that spreads its
/// requests over the three gets the limit once, not three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_failing_over_to_local_buckets_keep_one_limit() {
    let (redis, service, dir) =
        service_over_dying_redis_with("local", 30, &["--replicas", "3"]).await;
    let mut client = service.client().await;
    drop(redis);
    let key = || vec![descriptor(&[("remote_address", "10.3.0.9")])];
    let mut admitted = 0;
    for _ in 0..60 {
        let answer = ask(&mut client, "edge", key(), 0).await.unwrap();
        admitted += u32::from(answer.overall_code == OK);
    }
    // One replica's share of 30 an hour: 10 (no refill in the test's seconds). Three replicas
    // would together admit 30; without the replica count this one alone admitted 30.
    assert_eq!(
        admitted, 10,
        "one replica admitted {admitted} during the outage"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bound: with failure policy `closed`, a store outage admits nothing (0 ≤ any bound): every
/// request is answered OVER_LIMIT, never with an error status that Envoy would admit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_failing_closed_is_over_limit_not_an_error() {
    let (redis, service, dir) = service_over_dying_redis("closed").await;
    let mut client = service.client().await;
    let key = || vec![descriptor(&[("remote_address", "10.3.0.1")])];
    assert_eq!(
        ask(&mut client, "edge", key(), 0)
            .await
            .unwrap()
            .overall_code,
        OK
    );
    drop(redis);
    for call in 0..20 {
        let answer = ask(&mut client, "edge", key(), 0)
            .await
            .unwrap_or_else(|e| panic!("call {call} during the outage got an error: {e}"));
        assert_eq!(
            answer.overall_code, OVER,
            "call {call} admitted during the outage"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bound: the limiter stays in the path during an outage (so its failure policy keeps deciding):
/// liveness, readiness and gRPC health stay up while the store is down, and store health is
/// reported apart. A probe that failed here would restart or unroute every replica at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_during_a_store_outage_keeps_the_replica() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let (redis, service, dir) = service_over_dying_redis("local").await;
    let mut client = service.client().await;
    let key = || vec![descriptor(&[("remote_address", "10.3.0.2")])];
    assert_eq!(
        ask(&mut client, "edge", key(), 0)
            .await
            .unwrap()
            .overall_code,
        OK
    );
    assert_eq!(
        service.metric("ratelimit_service_store_healthy").await,
        Some(1.0)
    );
    drop(redis);
    // The limiter finds out on its next store call.
    let noticed = eventually(|| {
        let mut client = client.clone();
        let service = &service;
        async move {
            let _ = ask(&mut client, "edge", key(), 0).await;
            service.metric("ratelimit_service_store_healthy").await == Some(0.0)
        }
    })
    .await;
    assert!(noticed, "the store's outage was never reported");
    for path in ["/livez", "/readyz", "/healthz"] {
        let (code, body) = service.get(path).await.unwrap();
        assert_eq!(code, 200, "{path} during the outage: {body}");
    }
    let (_, readiness) = service.get("/readyz").await.unwrap();
    assert!(readiness.contains("store unavailable"), "{readiness}");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", service.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel);
    for name in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let status = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "gRPC health of {name:?}"
        );
    }
    // And decisions are still served, by the local fallback.
    let answer = ask(&mut client, "edge", key(), 0).await.unwrap();
    assert_eq!(answer.overall_code, OK);
    std::fs::remove_dir_all(&dir).unwrap();
}
