//! A distributed flood through the real ingress gateway while the backend fails: the controller
//! meets it first on the newcomers' cohort, within a few ticks of the overload, and explains the
//! action (cohort, signal, what was done, until when) in the decision stream and on `/status`.
//! Measured by phase and printed: the time to mitigation, the share of the flood limited, and the
//! shares of the established clients (before, during, after) and of people arriving during the
//! flood that were limited; asserted: at least 90% of the flood limited from ten ticks in, no
//! established client limited at all, people under 10%. Once the flood stops, every tightening
//! relaxes. The simulated scenarios of ratelimit-anomaly cover the other attacks in exact time.
//!
//! Clients are told apart by `X-Forwarded-For` from loopback (a trusted proxy by default). The
//! backend fails every request from the moment the test says it is overloaded until the
//! newcomers' budget is set (the budget is what relieves it), which is what the controller's
//! health gate reads. Nothing here asserts a speed: every wait counts the controller's ticks or
//! polls for its condition with a generous deadline, and the shares asserted are about who was
//! refused, not how many requests went through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What `/status` shows, as the page reads it: `/status.json` (the page itself is static).
async fn status_page(http: &HttpClient, gateway: SocketAddr) -> String {
    let request = Request::builder()
        .uri(format!("http://{gateway}/status.json"))
        .body(Body::empty())
        .unwrap();
    let response = http.request(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Requests one kind of sender sent, and of those the limited (429), counted as they go so that
/// the test can read them at each phase's boundary.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    limited: AtomicU64,
}

impl Counts {
    fn read(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.limited.load(Ordering::Relaxed),
        )
    }

    fn count(&self, status: StatusCode) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The share limited between two readings of a [`Counts`].
fn share((sent0, limited0): (u64, u64), (sent1, limited1): (u64, u64)) -> f64 {
    let sent = sent1 - sent0;
    if sent == 0 {
        0.0
    } else {
        (limited1 - limited0) as f64 / sent as f64
    }
}

/// Sends from `clients` in turn until `stop`, counting into `counts`.
fn traffic(
    http: HttpClient,
    gateway: SocketAddr,
    clients: Vec<String>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let status = send(&http, gateway, &clients[i % clients.len()]).await;
            counts.count(status);
            i += 1;
        }
    })
}

/// People arriving: each new address sends three requests a few ticks apart and is not seen
/// again (a short session at a human rate, never persistent), until `stop`.
fn people(
    http: HttpClient,
    gateway: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut person = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let address = format!("198.18.{}.{}", (person >> 8) & 255, person & 255);
            for _ in 0..3 {
                counts.count(send(&http, gateway, &address).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            person += 1;
        }
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
                // A tick here is 50 ms: the smallest budget, a request a tick, is 20 a second.
                newcomer_floor: 1,
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
    let ticks = || gateway.anomaly.status().ticks;
    let wait_ticks = |what: &'static str, n: u64| {
        let anomaly = gateway.anomaly.clone();
        let from = anomaly.status().ticks;
        until(what, move || {
            let anomaly = anomaly.clone();
            async move { anomaly.status().ticks >= from + n }
        })
    };
    let (background_counts, flood_counts, people_counts) = (
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
    );

    // The clients who are there before: long enough for the monitor's cohorts to establish them
    // (seen in two epochs of 30 ticks with one between) and for the controller's baselines.
    let established: Vec<String> = (1..=20).map(|i| format!("10.0.0.{i}")).collect();
    let stop_background = Arc::new(AtomicBool::new(false));
    let background: Vec<_> = (0..2)
        .map(|_| {
            traffic(
                http.clone(),
                at,
                established.clone(),
                background_counts.clone(),
                stop_background.clone(),
            )
        })
        .collect();
    // Wait for that many of the controller's ticks (a busy machine only delays them), and for the
    // controller in its normal state (real traffic on a busy machine can look odd for a moment;
    // wait that out rather than fail on it).
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
    let before = background_counts.read();
    wait_ticks("background ticks before the flood", 20).await;

    // The flood: new addresses, each active every tick (few enough that even a busy machine's
    // slow flood reaches each of them every tick: machines, not people), more requests than the
    // background; people keep arriving beside it. The backend fails once the flood is under way, as an
    // overload follows the flood that causes it. (Failing it first left ticks in which the
    // controller saw the backend hurt and no surge yet, and it rightly cut the global limit.)
    let flood_clients: Vec<String> = (0..48).map(|i| format!("172.16.0.{i}")).collect();
    let stop_flood = Arc::new(AtomicBool::new(false));
    let flood_started = ticks();
    let at_flood = (background_counts.read(), flood_counts.read());
    let mut flood: Vec<_> = (0..8)
        .map(|k| {
            let mut mine = flood_clients.clone();
            mine.rotate_left(k * 6);
            traffic(
                http.clone(),
                at,
                mine,
                flood_counts.clone(),
                stop_flood.clone(),
            )
        })
        .collect();
    flood.push(people(
        http.clone(),
        at,
        people_counts.clone(),
        stop_flood.clone(),
    ));
    let established_before = share(before, at_flood.0);
    wait_ticks("ten ticks of the flood on a healthy backend", 10).await;
    let overloaded_at = ticks();
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
    // The budget relieves the backend: from here it serves what it is sent.
    overloaded.store(false, Ordering::Relaxed);
    let mitigated = (
        background_counts.read(),
        flood_counts.read(),
        people_counts.read(),
    );
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
    let time_to_mitigate = first.decided.tick.saturating_sub(overloaded_at);
    until("/status to explain the action", || {
        let http = http.clone();
        let signal = signal.clone();
        async move {
            let page = status_page(&http, at).await;
            page.contains(&signal) && page.contains("until")
        }
    })
    .await;

    // Ten ticks for the flood's sources to turn persistent (active in 8 ticks), then forty of the
    // flood held to the budgets.
    wait_ticks("ten ticks of mitigation", 10).await;
    let settled = (
        background_counts.read(),
        flood_counts.read(),
        people_counts.read(),
    );
    wait_ticks("forty ticks of mitigation", 40).await;
    let end = (
        background_counts.read(),
        flood_counts.read(),
        people_counts.read(),
    );

    // The flood stops: every tightening relaxes once the traffic is calm.
    stop_flood.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let calm = background_counts.read();
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
    wait_ticks("background ticks after the flood", 20).await;
    let after = background_counts.read();
    stop_background.store(true, Ordering::Relaxed);
    for task in background {
        task.await.unwrap();
    }

    let flood_sent = end.1.0 - settled.1.0;
    let report = format!(
        "time to mitigate {time_to_mitigate} ticks from the overload; flood limited {:.1}% from 10 \
         ticks in ({flood_sent} sent), {:.1}% over the whole flood; established clients limited \
         before {:.2}%, during {:.2}%, after {:.2}%; people arriving limited {:.1}% from 10 ticks \
         in, {:.1}% from the budget on",
        100.0 * share(settled.1, end.1),
        100.0 * share(at_flood.1, end.1),
        100.0 * established_before,
        100.0 * share(at_flood.0, end.0),
        100.0 * share(calm, after),
        100.0 * share(settled.2, end.2),
        100.0 * share(mitigated.2, end.2),
    );
    println!("{report}");
    assert!(time_to_mitigate <= 10, "{report}");
    assert!(flood_sent > 0, "{report}");
    assert!(share(settled.1, end.1) >= 0.9, "{report}");
    assert!(share(at_flood.0, end.0) < 0.01, "{report}");
    assert!(
        established_before == 0.0 && share(calm, after) == 0.0,
        "{report}"
    );
}
