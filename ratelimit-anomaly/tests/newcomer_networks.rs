//! The newcomers' budget against an attacker who owns a network: rotating its sources through a
//! /48 (or a /24), each source new and never persistent, it spends at most its network's share of
//! the budget, and the people arriving from other networks in the same tick are all let in.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use ratelimit_anomaly::tower::{NETWORK_SHARE_DIVISOR, TowerActuator, newcomer_rules};
use ratelimit_anomaly::{Action, Actuator, Cohort, Monitor, Reason, Signal, Until};
use ratelimit_core::{Limiter, MemoryStore, Policy};
use ratelimit_tower::{KeyExtractor, PeerAddr, RateLimitLayer, Rule, TrustedProxies};
use tower::ServiceExt;

/// The newcomers' budget a tick; the tick is an hour, so nothing refills while the test runs.
const BUDGET: u32 = 40;

/// An app behind the gateway's rules (per client, the newcomer rules), with the newcomers'
/// budget switched on as the controller would switch it.
fn app() -> Router {
    let monitor = Arc::new(Monitor::default());
    let trusted = TrustedProxies::none();
    let newcomers = newcomer_rules(
        monitor,
        trusted.clone(),
        "newcomers",
        "persistent-newcomers",
    )
    .unwrap();
    let layer = RateLimitLayer::builder(Arc::new(Limiter::new(MemoryStore::new())))
        .rule(Rule::new(
            "per-client",
            KeyExtractor::ClientIp(trusted),
            Policy::per_second(100).unwrap(),
        ))
        .rule(newcomers.newcomers)
        .rule(newcomers.persistent)
        .rule(newcomers.by_network)
        .build()
        .unwrap();
    let actuator = TowerActuator::new(layer.handle(), "per-client")
        .unwrap()
        .with_newcomer_rules(newcomers.gate, Duration::from_secs(3600))
        .unwrap();
    let mut reason = Reason::everyone(
        Signal::NewcomerSurge,
        10.0,
        5000.0,
        100.0,
        Until::Calm { quiet_ticks: 10 },
    );
    reason.cohort = Cohort::Newcomers;
    actuator.apply(&Action::LimitNewcomers {
        per_tick: BUDGET,
        persistent_per_tick: BUDGET / 4,
        reason,
    });
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
}

async fn admitted(app: &Router, client: IpAddr) -> bool {
    let mut request = Request::get("/").body(axum::body::Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::new(client, 40000)));
    let status = app.clone().oneshot(request).await.unwrap().status();
    assert!(
        status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
        "{status}"
    );
    status == StatusCode::OK
}

/// `flood` sources of one network, one request each, then one person from each of `people`
/// other networks: how many of each got in.
async fn run(
    flood: impl Iterator<Item = IpAddr>,
    people: impl Iterator<Item = IpAddr>,
) -> (u32, u32) {
    let app = app();
    let mut flood_in = 0;
    for source in flood {
        flood_in += u32::from(admitted(&app, source).await);
    }
    let mut people_in = 0;
    for person in people {
        people_in += u32::from(admitted(&app, person).await);
    }
    (flood_in, people_in)
}

/// The flood of one network gets exactly its share of the budget, and every person from another
/// network gets in.
async fn assert_network_held_to_its_share(
    flood: impl Iterator<Item = IpAddr>,
    people: impl Iterator<Item = IpAddr>,
) {
    let people: Vec<IpAddr> = people.collect();
    let expected_people = u32::try_from(people.len()).unwrap();
    let (flood_in, people_in) = run(flood, people.into_iter()).await;
    assert_eq!(
        flood_in,
        BUDGET / NETWORK_SHARE_DIVISOR,
        "the flood's network got more than its share"
    );
    assert_eq!(
        people_in, expected_people,
        "people from other networks were turned away"
    );
}

#[tokio::test]
async fn sources_rotating_through_one_ipv6_network_cannot_spend_everyones_budget() {
    // 2,000 different /64s of one /48: 2,000 clients to every per-client rule, all new.
    let flood = (0..2000u128).map(|i| {
        IpAddr::from(Ipv6Addr::from(
            (0x2001_0db8_0bad_u128 << 80) | (i << 64) | 1,
        ))
    });
    // 20 people, each from a /48 of their own.
    let people =
        (0..20u128).map(|i| IpAddr::from(Ipv6Addr::from(((0x2001_0db8_1000_u128 + i) << 80) | 7)));
    assert_network_held_to_its_share(flood, people).await;
}

#[tokio::test]
async fn sources_rotating_through_one_ipv4_network_cannot_spend_everyones_budget() {
    // Every address of 192.0.2.0/24, each a client of its own.
    let flood = (0..=255u8).map(|i| IpAddr::from([192, 0, 2, i]));
    // 20 people, each from a /24 of their own.
    let people = (0..20u8).map(|i| IpAddr::from([198, 51, i, 7]));
    assert_network_held_to_its_share(flood, people).await;
}

#[tokio::test]
async fn newcomers_spread_over_networks_still_share_one_budget() {
    // One source in each of 100 networks: no network is over its share, the whole budget holds.
    let flood = (0..100u8).map(|i| IpAddr::from([203, i, 113, 9]));
    let (flood_in, _) = run(flood, std::iter::empty()).await;
    assert_eq!(flood_in, BUDGET);
}
