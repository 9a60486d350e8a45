//! The layer, attacked through every input a client controls. Each test states the bound it
//! defends: one client, however it dresses its requests, is admitted at most the rule's burst (the
//! policies here refill once an hour, so no refill happens during a test), and no request of one
//! client can spend another's budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{HeaderName, Request, Response, StatusCode};
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_tower::{
    ForwardedHeader, IpPrefixes, KeyExtractor, Matcher, PeerAddr, RateLimitLayer, Rule,
    TrustedProxies,
};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

const BURST: u32 = 5;

fn hourly(burst: u32) -> Policy {
    Policy::per_hour(burst).unwrap()
}

/// A service behind `rules` that answers 200 to whatever passes.
type App = BoxCloneService<Request<String>, Response<axum::body::Body>, Infallible>;

fn app(rules: Vec<Rule>) -> App {
    let mut builder =
        RateLimitLayer::builder(std::sync::Arc::new(Limiter::new(MemoryStore::new())));
    for rule in rules {
        builder = builder.rule(rule);
    }
    let layer = builder.build().unwrap();
    BoxCloneService::new(
        layer.layer(tower::service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(axum::body::Body::from("ok")))
        })),
    )
}

fn request(peer: &str, path: &str, headers: &[(&str, String)]) -> Request<String> {
    let mut builder = Request::builder().uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let mut request = builder.body(String::new()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(PeerAddr(peer));
    request
}

/// Sends every request and counts the 200s.
async fn admitted(service: &App, requests: impl IntoIterator<Item = Request<String>>) -> u32 {
    let mut ok = 0;
    for request in requests {
        let response = service.clone().oneshot(request).await.unwrap();
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("a decision, not {other}"),
        }
    }
    ok
}

fn behind_proxy(header: ForwardedHeader) -> Rule {
    let trusted = TrustedProxies::parse(["127.0.0.0/8"])
        .unwrap()
        .with_header(header);
    Rule::new("client", KeyExtractor::ClientIp(trusted), hourly(BURST))
}

/// Bound: burst. Behind proxies that append `X-Forwarded-For`, a client that adds a fresh
/// `Forwarded: for=` (or `X-Real-IP`) to every request still counts as the address the proxy saw.
#[tokio::test]
async fn rotating_forwarded_and_x_real_ip_headers_do_not_make_new_clients() {
    let service = app(vec![behind_proxy(ForwardedHeader::XForwardedFor)]);
    let requests = (0..60u32).map(|i| {
        request(
            "127.0.0.1:4000",
            "/",
            &[
                ("forwarded", format!("for=203.0.{}.{}", i / 250, i % 250)),
                ("x-real-ip", format!("198.18.{}.{}", i / 250, i % 250)),
                ("x-forwarded-for", "192.0.2.10".into()),
            ],
        )
    });
    assert_eq!(admitted(&service, requests).await, BURST);
}

/// Bound: burst. Where the proxies set `Forwarded`, a client's own `X-Forwarded-For` is ignored.
#[tokio::test]
async fn rotating_x_forwarded_for_behind_a_forwarded_proxy_is_ignored() {
    let service = app(vec![behind_proxy(ForwardedHeader::Forwarded)]);
    let requests = (0..60u32).map(|i| {
        request(
            "127.0.0.1:4000",
            "/",
            &[
                ("x-forwarded-for", format!("203.0.113.{i}")),
                ("forwarded", "for=192.0.2.10".into()),
            ],
        )
    });
    assert_eq!(admitted(&service, requests).await, BURST);
}

/// Bound: burst. What a client writes left of the address our proxy appended is never read, and
/// junk there cannot move it to another bucket.
#[tokio::test]
async fn spoofed_and_junk_hops_left_of_the_proxy_entry_are_never_read() {
    let service = app(vec![behind_proxy(ForwardedHeader::XForwardedFor)]);
    let requests = (0..60u32).map(|i| {
        let spoof = match i % 3 {
            0 => format!("10.{i}.0.1"),
            1 => format!("junk-{i}"),
            _ => "127.0.0.1".into(),
        };
        request(
            "127.0.0.1:4000",
            "/",
            &[("x-forwarded-for", format!("{spoof}, 192.0.2.10"))],
        )
    });
    assert_eq!(admitted(&service, requests).await, BURST);
}

/// Bound: burst per /64. Sixty addresses inside one IPv6 /64 are one client, for the peer address
/// and behind proxies alike; another /64 has a bucket of its own.
#[tokio::test]
async fn rotating_addresses_inside_one_ipv6_64_is_one_client() {
    let peer = app(vec![Rule::new("peer", KeyExtractor::PeerIp, hourly(BURST))]);
    let requests = (0..60u32).map(|i| request(&format!("[2001:db8:7:7::{i:x}]:4000"), "/", &[]));
    assert_eq!(admitted(&peer, requests).await, BURST);
    let neighbour = request("[2001:db8:7:8::1]:4000", "/", &[]);
    assert_eq!(admitted(&peer, [neighbour]).await, 1);

    let proxied = app(vec![behind_proxy(ForwardedHeader::XForwardedFor)]);
    let requests = (0..60u32).map(|i| {
        request(
            "127.0.0.1:4000",
            "/",
            &[("x-forwarded-for", format!("2001:db8:9:9:{i:x}::1"))],
        )
    });
    assert_eq!(admitted(&proxied, requests).await, BURST);
}

/// Bound: burst per /24 when the operator sets it.
#[tokio::test]
async fn ipv4_prefix_setting_groups_a_subnet() {
    let trusted = TrustedProxies::none().with_prefixes(IpPrefixes::new(24, 64).unwrap());
    let service = app(vec![Rule::new(
        "subnet",
        KeyExtractor::ClientIp(trusted),
        hourly(BURST),
    )]);
    let requests = (1..=60u32).map(|i| request(&format!("198.51.100.{i}:4000"), "/", &[]));
    assert_eq!(admitted(&service, requests).await, BURST);
}

/// Bound: burst per key value. A header value far longer than a store accepts, or not ASCII, is
/// decided (hashed into a key of its own), never turned into an error that admits or a detour into
/// a shared bucket with budget left.
#[tokio::test]
async fn oversized_and_non_ascii_header_values_are_decided_under_their_own_key() {
    let api_key = HeaderName::from_static("x-api-key");
    let service = app(vec![Rule::new(
        "key",
        KeyExtractor::header(api_key),
        hourly(BURST),
    )]);
    let long = "k".repeat(10_000);
    let requests = (0..20).map(|_| request("192.0.2.1:1", "/", &[("x-api-key", long.clone())]));
    assert_eq!(admitted(&service, requests).await, BURST);

    let mut latin1 = (0..20)
        .map(|_| request("192.0.2.1:1", "/", &[]))
        .collect::<Vec<_>>();
    for r in &mut latin1 {
        r.headers_mut().insert(
            "x-api-key",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
    }
    assert_eq!(admitted(&service, latin1).await, BURST);

    // Neither spent the shared bucket of requests that carry no key at all.
    let keyless = (0..20).map(|_| request("192.0.2.1:1", "/", &[]));
    assert_eq!(admitted(&service, keyless).await, BURST);
}

/// Bound: the victim rule keeps its whole burst. Rule names may hold `:`; a client whose header
/// value spells the rest of another rule's key (`admin:*` under rule `api`, next to the global
/// rule `api:admin`) must not spend that rule's bucket.
#[tokio::test]
async fn a_key_value_that_spells_another_rules_key_does_not_reach_it() {
    let user = HeaderName::from_static("x-user");
    let service = app(vec![
        Rule::new("api", KeyExtractor::header(user), hourly(1000)).matching(Matcher::path("/user")),
        Rule::new("api:admin", KeyExtractor::Global, hourly(BURST))
            .matching(Matcher::path("/admin")),
    ]);
    let attack = (0..50).map(|_| request("192.0.2.66:1", "/user", &[("x-user", "admin:*".into())]));
    assert_eq!(admitted(&service, attack).await, 50);
    let victim = (0..BURST).map(|_| request("192.0.2.1:1", "/admin", &[]));
    assert_eq!(admitted(&service, victim).await, BURST);
}
