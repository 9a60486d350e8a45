//! A distributed flood through the real ingress gateway while the backend fails: the controller
//! acts on it first on the newcomers' cohort, and the action is explained (cohort, signal, what was done, until when) in the
//! decision stream and on `/status`; once the flood stops and the backend is well again, every
//! tightening relaxes. Who is refused, and how much, is asserted in the simulated
//! scenarios of ratelimit-anomaly, where time is exact.
//!
//! Clients are told apart by `X-Forwarded-For` from loopback (a trusted proxy by default). The
//! backend fails every request while the test says it is overloaded, which is what the
//! controller's health gate reads. Nothing here asserts a speed: every wait polls for its
//! condition with a generous deadline, and the counts asserted are about who was refused, not how
//! many requests went through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ratelimit_anomaly::{Action, Cohort, ControllerConfig, DetectorConfig, Signal, Until};
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::proxy::{HttpClient, client};

const PATIENCE: Duration = Duration::from_secs(90);

/// A backend that answers 200, or 503 to everyone while `overloaded`.
async fn backend(overloaded: Arc<AtomicBool>) -> SocketAddr {
    let app = Router::new().fallback(move || {
        let overloaded = overloaded.load(Ordering::Relaxed);
        async move {
            if overloaded {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

async fn send(http: &HttpClient, gateway: SocketAddr, client: &str) -> StatusCode {
    let request = Request::builder()
        .uri(format!("http://{gateway}/api/orders"))
        .header("x-forwarded-for", client)
        .body(Body::empty())
        .unwrap();
    http.request(request).await.unwrap().status()
}

async fn status_page(http: &HttpClient, gateway: SocketAddr) -> String {
    let request = Request::builder()
        .uri(format!("http://{gateway}/status"))
        .body(Body::empty())
        .unwrap();
    let response = http.request(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Sends from `clients` in turn until `stop`, counting 429s per sender kind.
fn traffic(
    http: HttpClient,
    gateway: SocketAddr,
    clients: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut sent, mut limited) = (0u64, 0u64);
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let status = send(&http, gateway, &clients[i % clients.len()]).await;
            sent += 1;
            limited += u64::from(status == StatusCode::TOO_MANY_REQUESTS);
            i += 1;
        }
        (sent, limited)
    })
}

async fn until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_newcomers_is_met_on_them_and_explained_on_status() {
    let overloaded = Arc::new(AtomicBool::new(false));
    let egress = backend(overloaded.clone()).await;
    let tick = Duration::from_millis(50);
    let gateway = start(
        "127.0.0.1:0".parse().unwrap(),
        egress,
        GatewayConfig {
            // Limits nobody here meets: what limits the flood is the controller's action.
            per_client: 100_000,
            global: 1_000_000,
            anomaly: ControllerConfig {
                tick,
                detector: DetectorConfig {
                    warmup_ticks: 20,
                    ..DetectorConfig::default()
                },
                ..ControllerConfig::default()
            },
            ..GatewayConfig::default()
        },
    )
    .await
    .unwrap();
    let at = gateway.address;
    let mut decisions = gateway.anomaly.subscribe();
    let http = client();

    // The clients who are there before: long enough for two epochs of the monitor's cohorts (30
    // ticks each), so that they are established, and for the controller's baselines.
    let established: Vec<String> = (1..=20).map(|i| format!("10.0.0.{i}")).collect();
    let stop_background = Arc::new(AtomicBool::new(false));
    let background: Vec<_> = (0..2)
        .map(|_| {
            traffic(
                http.clone(),
                at,
                established.clone(),
                stop_background.clone(),
            )
        })
        .collect();
    // Two epochs of the monitor's cohorts (30 ticks each) make the background established, and
    // the controller's baselines need their warm-up: wait for that many of the controller's ticks
    // (a busy machine only delays them).
    // Then the flood starts on a controller in its normal state (real traffic on a busy machine
    // can look odd for a moment; wait that out rather than fail on it).
    until(
        "200 ticks of background traffic, the controller normal",
        || {
            let anomaly = gateway.anomaly.clone();
            async move {
                let status = anomaly.status();
                status.ticks >= 200 && status.state == ratelimit_anomaly::State::Normal
            }
        },
    )
    .await;

    // The flood: many new addresses, more of them than the background; the backend fails once the
    // flood is under way, as an overload follows the flood that causes it. (Failing it first left
    // ticks in which the controller saw the backend hurt and no surge yet, and it rightly cut the
    // global limit.)
    let flood_clients: Vec<String> = (0..400)
        .map(|i| format!("172.16.{}.{}", i / 256, i % 256))
        .collect();
    let stop_flood = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|k| {
            let mut mine = flood_clients.clone();
            mine.rotate_left(k * 50);
            traffic(http.clone(), at, mine, stop_flood.clone())
        })
        .collect();

    let flood_started = gateway.anomaly.status().ticks;
    until("ten ticks of the flood on a healthy backend", || {
        let anomaly = gateway.anomaly.clone();
        async move { anomaly.status().ticks >= flood_started + 10 }
    })
    .await;
    overloaded.store(true, Ordering::Relaxed);

    // The first action on the flood is on the newcomers, the cohort that arrived with it, and
    // it is explained, in the decision stream (cohort, signal, what was done, until when) and on
    // /status. The budget is set at the end of the first unhealthy tick of the surge, with no
    // confirmation, so it comes before anything that would touch the established clients (a
    // route's or the global limit), however the busy machine's clock falls. A key penalty may
    // come first (a flood source far above its peers); it touches only that key.
    let first = tokio::time::timeout(PATIENCE, async {
        loop {
            match decisions.recv().await {
                Ok(e)
                    if e.decided.apply
                        // Decisions before the flood (real traffic on a busy machine can look
                        // odd for a moment in the warm-up) are not about it.
                        && e.decided.tick > flood_started
                        && !matches!(e.decided.action, Action::PenalizeKey { .. }) =>
                {
                    break e;
                }
                Ok(_) => {}
                Err(e) => panic!("decision stream: {e}"),
            }
        }
    })
    .await
    .expect("no action taken on the flood");
    println!("first action: {}", first.text);
    assert!(
        matches!(first.decided.action, Action::LimitNewcomers { .. }),
        "the flood was first met on another cohort: {}",
        first.text
    );
    let reason = first.decided.action.reason();
    assert_eq!(reason.cohort, Cohort::Newcomers);
    assert_eq!(reason.signal, Signal::NewcomerSurge);
    assert!(matches!(reason.until, Until::Calm { .. }), "{reason:?}");
    let signal = format!("{:?}", reason.signal);
    assert!(first.text.contains(&signal), "{}", first.text);
    assert!(first.text.contains("until"), "{}", first.text);
    until("/status to explain the action", || {
        let http = http.clone();
        let signal = signal.clone();
        async move {
            let page = status_page(&http, at).await;
            page.contains(&signal) && page.contains("until")
        }
    })
    .await;

    // The flood stops and the backend recovers: every tightening relaxes once the traffic is calm.
    stop_flood.store(true, Ordering::Relaxed);
    for task in flood {
        let (sent, _) = task.await.unwrap();
        assert!(sent > 0);
    }
    overloaded.store(false, Ordering::Relaxed);
    until("every action to relax", || {
        let anomaly = gateway.anomaly.clone();
        async move {
            let status = anomaly.status();
            status.state == ratelimit_anomaly::State::Normal
                && status.factor >= 1.0
                && status.newcomer_budget.is_none()
        }
    })
    .await;
    stop_background.store(true, Ordering::Relaxed);
    for task in background {
        task.await.unwrap();
    }
}
