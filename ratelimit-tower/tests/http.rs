//! The layer in front of a real axum server, called over HTTP/1.1 and HTTP/2 on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{http1, http2, memory_limiter, serve_axum};
use http::{HeaderName, StatusCode};
use ratelimit_core::Policy;
use ratelimit_tower::{
    DecisionEvent, DecisionObserver, HeaderOptions, KeyExtractor, Matcher, MissingKey, Outcome,
    RateLimitHandle, RateLimitLayer, Rule, TrustedProxies,
};
use sfv::{BareItem, ListEntry, Parser};

fn per_ip(burst: u32) -> Rule {
    Rule::new(
        "per-ip",
        KeyExtractor::PeerIp,
        Policy::per_hour(burst).unwrap(),
    )
    .matching(Matcher::path("/api/*"))
}

async fn statuses(client: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.get(url).send().await.unwrap().status().as_u16());
    }
    out
}

/// Parses a header as an RFC 9651 List and returns each member's string and integer parameters.
fn sf_list(value: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let list = Parser::new(value)
        .parse::<sfv::List>()
        .unwrap_or_else(|e| panic!("{value:?}: {e}"));
    list.into_iter()
        .map(|entry| match entry {
            ListEntry::Item(item) => {
                let BareItem::String(name) = item.bare_item else {
                    panic!("member is not a string: {value}")
                };
                let params = item
                    .params
                    .into_iter()
                    .map(|(k, v)| match v {
                        BareItem::Integer(i) => (k.as_str().to_string(), i64::from(i)),
                        other => panic!("parameter {k:?} is not an integer: {other:?}"),
                    })
                    .collect();
                (name.as_str().to_string(), params)
            }
            ListEntry::InnerList(_) => panic!("inner list in {value}"),
        })
        .collect()
}

#[tokio::test]
async fn limits_per_ip_over_http1_and_http2_with_draft_headers() {
    for (client, version) in [
        (http1(), http::Version::HTTP_11),
        (http2(), http::Version::HTTP_2),
    ] {
        let layer = RateLimitLayer::builder(memory_limiter())
            .rule(per_ip(3))
            .build()
            .unwrap();
        let addr = serve_axum(layer).await;
        let url = format!("http://{addr}/api/hello");
        for _ in 0..3 {
            let ok = client.get(&url).send().await.unwrap();
            assert_eq!(ok.version(), version);
            assert_eq!(ok.status(), StatusCode::OK);
            assert_eq!(ok.text().await.unwrap(), "hello");
        }
        let denied = client.get(&url).send().await.unwrap();
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = denied.headers();
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        // One token of 3 an hour comes back in 20 minutes; Retry-After rounds up, never to zero.
        assert!((1..=1200).contains(&retry), "retry-after {retry}");
        let policy = sf_list(headers["ratelimit-policy"].to_str().unwrap());
        assert_eq!(
            policy,
            vec![(
                "per-ip".to_string(),
                vec![("q".into(), 3), ("w".into(), 3600)]
            )]
        );
        let state = sf_list(headers["ratelimit"].to_str().unwrap());
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].0, "per-ip");
        assert_eq!(state[0].1[0], ("r".to_string(), 0));
        assert_eq!(state[0].1[1].0, "t");
        assert!(state[0].1[1].1 > 0);
        // Routes no rule matches are not limited.
        let public = statuses(&client, &format!("http://{addr}/public"), 5).await;
        assert!(public.iter().all(|s| *s == 200));
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    // Trusted proxies are 10.0.0.0/8; the test client on 127.0.0.1 is not one of them.
    let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
    let rule = Rule::new(
        "client",
        KeyExtractor::ClientIp(trusted),
        Policy::per_hour(2).unwrap(),
    );
    let addr = serve_axum(
        RateLimitLayer::builder(memory_limiter())
            .rule(rule)
            .build()
            .unwrap(),
    )
    .await;
    let client = http1();
    let mut codes = Vec::new();
    for i in 0..4 {
        let spoof = format!("203.0.113.{i}");
        let r = client
            .get(format!("http://{addr}/api/hello"))
            .header("x-forwarded-for", spoof)
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(
        codes,
        [200, 200, 429, 429],
        "each spoofed address got a bucket of its own"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client() {
    let trusted = TrustedProxies::parse(["127.0.0.1/32"]).unwrap();
    let rule = Rule::new(
        "client",
        KeyExtractor::ClientIp(trusted),
        Policy::per_hour(2).unwrap(),
    );
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(rule)
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = serve_axum(layer).await;
    let client = http1();
    let send = |xff: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}/api/hello"))
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The client controls what it puts on the left; the address our proxy saw is the rightmost.
    assert_eq!(send("1.1.1.1, 198.51.100.7").await, 200);
    assert_eq!(send("2.2.2.2, 198.51.100.7").await, 200);
    assert_eq!(send("3.3.3.3, 198.51.100.7").await, 429);
    assert_eq!(
        send("198.51.100.8").await,
        200,
        "another client has its own bucket"
    );
    // A header that is not an address counts against the trusted proxy that sent it: one bucket
    // whatever the junk, never a fresh one and never an error.
    assert_eq!(send("not-an-ip").await, 200);
    assert_eq!(send("also, not an ip").await, 200);
    assert_eq!(send("nope").await, 429);
    assert_eq!(
        handle
            .counters("client")
            .unwrap()
            .no_key
            .load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn requests_without_a_key_get_the_configured_outcome() {
    let api_key = HeaderName::from_static("x-api-key");
    let shared = Rule::new(
        "shared",
        KeyExtractor::header(api_key.clone()),
        Policy::per_hour(2).unwrap(),
    )
    .matching(Matcher::path("/api/*"));
    let reject = Rule::new(
        "reject",
        KeyExtractor::header(api_key.clone()),
        Policy::per_hour(2).unwrap(),
    )
    .matching(Matcher::path("/login"))
    .on_missing_key(MissingKey::Reject(StatusCode::UNAUTHORIZED));
    let skip = Rule::new(
        "skip",
        KeyExtractor::header(api_key.clone()),
        Policy::per_hour(1).unwrap(),
    )
    .matching(Matcher::path("/public"))
    .on_missing_key(MissingKey::Skip);
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(shared)
        .rule(reject)
        .rule(skip)
        .build()
        .unwrap();
    let addr = serve_axum(layer).await;
    let client = http1();
    // No key at all: one shared bucket, never a 500.
    assert_eq!(
        statuses(&client, &format!("http://{addr}/api/hello"), 3).await,
        [200, 200, 429]
    );
    // With a key, a bucket of its own.
    let keyed = client
        .get(format!("http://{addr}/api/hello"))
        .header(&api_key, "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);
    let login = client
        .post(format!("http://{addr}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        statuses(&client, &format!("http://{addr}/public"), 4).await,
        [200; 4]
    );
}

#[tokio::test]
async fn shadow_mode_counts_but_lets_through() {
    let rule = per_ip(2).shadow(true);
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(rule)
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = serve_axum(layer).await;
    assert_eq!(
        statuses(&http1(), &format!("http://{addr}/api/hello"), 5).await,
        [200; 5]
    );
    let counters = handle.counters("per-ip").unwrap();
    assert_eq!(counters.admitted.load(Ordering::Relaxed), 2);
    assert_eq!(counters.shadow_limited.load(Ordering::Relaxed), 3);
    assert_eq!(counters.limited.load(Ordering::Relaxed), 0);

    // Layer-wide shadow mode too.
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(per_ip(1))
        .shadow(true)
        .build()
        .unwrap();
    let addr = serve_axum(layer).await;
    assert_eq!(
        statuses(&http1(), &format!("http://{addr}/api/hello"), 3).await,
        [200; 3]
    );
}

#[tokio::test]
async fn several_rules_are_all_or_nothing() {
    // A request to /api matches both; the narrow one denies, and the wide one is not debited.
    let narrow = Rule::new("narrow", KeyExtractor::PeerIp, Policy::per_hour(1).unwrap())
        .matching(Matcher::path("/api/*"));
    let wide = Rule::new("wide", KeyExtractor::Global, Policy::per_hour(3).unwrap());
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(narrow)
        .rule(wide)
        .build()
        .unwrap();
    let addr = serve_axum(layer).await;
    let client = http1();
    assert_eq!(
        statuses(&client, &format!("http://{addr}/api/hello"), 4).await,
        [200, 429, 429, 429]
    );
    // The wide limit still has 2 of 3 left for other routes.
    assert_eq!(
        statuses(&client, &format!("http://{addr}/public"), 3).await,
        [200, 200, 429]
    );
}

/// An observer that tightens the policy after the second admitted request, as ratelimit-anomaly does.
struct Tightener {
    admitted: AtomicU32,
    handle: OnceLock<RateLimitHandle>,
}

impl DecisionObserver for Tightener {
    fn on_decision(&self, event: &DecisionEvent<'_>) {
        if event.outcome == Outcome::Admitted
            && self.admitted.fetch_add(1, Ordering::Relaxed) + 1 == 2
        {
            if let Some(handle) = self.handle.get() {
                handle
                    .set_policy(event.rule, Policy::per_hour(1).unwrap())
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn an_observer_tightens_a_policy_and_the_next_requests_see_it() {
    let observer = Arc::new(Tightener {
        admitted: AtomicU32::new(0),
        handle: OnceLock::new(),
    });
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(per_ip(100))
        .observer(observer.clone())
        .build()
        .unwrap();
    observer.handle.set(layer.handle()).ok();
    let handle = layer.handle();
    let addr = serve_axum(layer).await;
    // Under 100 an hour all four would pass. After two, the policy is 1 an hour: the bucket's state
    // (72 s of use at 100 an hour) plus one more request's hour is past the new one-hour tolerance.
    assert_eq!(
        statuses(&http1(), &format!("http://{addr}/api/hello"), 4).await,
        [200, 200, 429, 429]
    );
    assert_eq!(
        handle.policy("per-ip").unwrap(),
        Policy::per_hour(1).unwrap()
    );
    // Exported through the metrics facade, rendered by metrics-exporter-prometheus.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || handle.record_metrics());
    let text = recorder.handle().render();
    assert!(
        text.contains("ratelimit_decisions_total{rule=\"per-ip\",outcome=\"limited\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_blocked_key_is_denied_until_its_block_ends() {
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(per_ip(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let addr = serve_axum(layer).await;
    let url = format!("http://{addr}/api/hello");
    assert_eq!(statuses(&http1(), &url, 1).await, [200]);
    handle.block("127.0.0.1", Duration::from_millis(300));
    let blocked = http1().get(&url).send().await.unwrap();
    assert_eq!(blocked.status(), 429);
    assert_eq!(blocked.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(statuses(&http1(), &url, 1).await, [200]);
}

#[tokio::test]
async fn optional_headers_and_a_custom_rejection() {
    let layer = RateLimitLayer::builder(memory_limiter())
        .rule(per_ip(2))
        .headers(HeaderOptions {
            ietf: true,
            x_ratelimit: true,
            on_success: true,
        })
        .rejection(|rejection| {
            let mut response = http::Response::new(bytes::Bytes::from(format!(
                "{{\"error\":\"slow down\",\"rule\":\"{}\"}}",
                rejection.rule
            )));
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
        })
        .build()
        .unwrap();
    let addr = serve_axum(layer).await;
    let client = http1();
    let url = format!("http://{addr}/api/hello");
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert!(first.headers().contains_key("ratelimit"));
    client.get(&url).send().await.unwrap();
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["x-ratelimit-remaining"], "0");
    assert!(denied.headers().contains_key("retry-after"));
    assert_eq!(
        denied.text().await.unwrap(),
        "{\"error\":\"slow down\",\"rule\":\"per-ip\"}"
    );
}

#[test]
fn invalid_layers_are_refused() {
    use ratelimit_tower::ConfigError;
    let builder = || RateLimitLayer::builder(memory_limiter());
    assert_eq!(builder().build().unwrap_err(), ConfigError::NoRules);
    let bad = Rule::new(
        "has space",
        KeyExtractor::Global,
        Policy::per_hour(1).unwrap(),
    );
    assert!(matches!(
        builder().rule(bad).build().unwrap_err(),
        ConfigError::InvalidRuleName(_)
    ));
    let twice = || Rule::new("twice", KeyExtractor::Global, Policy::per_hour(1).unwrap());
    assert!(matches!(
        builder().rule(twice()).rule(twice()).build().unwrap_err(),
        ConfigError::DuplicateRuleName(_)
    ));
    let costly = Rule::new("costly", KeyExtractor::Global, Policy::per_hour(1).unwrap()).cost(2);
    assert!(matches!(
        builder().rule(costly).build().unwrap_err(),
        ConfigError::CostExceedsBurst { .. }
    ));
}
