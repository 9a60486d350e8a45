//! The gateway's `/status` page in a real headless browser (Debian's Chromium): it renders the
//! chart and the numbers from `/status.json`, the numbers move under load, and an anomaly action
//! appears on it once the controller takes one (a client far above its peers is blocked).
//!
//! Chromium is found as `chromium`, `chromium-browser`, `google-chrome` or
//! `google-chrome-stable`; when none is there, `scripts/services.sh chromium` installs Debian's
//! package (as `scripts/test.sh` does before every run). Only where it cannot be installed does
//! the test print `skipped: no Chromium (reason)` and return.
//!
//! Nothing here asserts a speed: every wait polls for its condition with a generous deadline,
//! and the browser is given a generous time of its own, so a busy two-core machine only makes
//! the test slower.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ratelimit_anomaly::{ControllerConfig, DetectorConfig};
use ratelimit_examples::gateway::{GatewayConfig, start};
use ratelimit_examples::proxy::{HttpClient, client};

const PATIENCE: Duration = Duration::from_secs(120);
/// How long one browser run may take before it is killed and the test fails.
const BROWSER_PATIENCE: Duration = Duration::from_secs(90);
const ABUSIVE: &str = "10.66.6.6";

/// The browser: on the PATH, or installed by the test command's script; `Err` says why not.
fn chromium() -> Result<PathBuf, String> {
    let find = || {
        let path = std::env::var_os("PATH").unwrap_or_default();
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("chromium")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    find().ok_or_else(|| {
        format!(
            "not on the PATH, and {} chromium could not install it: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// Runs the browser on `url` with `what` (`--dump-dom`, `--screenshot=...`) and returns what it
/// printed. The page's script runs for a few seconds of virtual time (each poll of status.json
/// is a real request to the gateway; virtual time waits for it), so the DOM is the drawn page.
async fn browse(binary: &Path, url: &str, what: &str) -> String {
    // A profile of its own for each run: two runs never share (or lock) one.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let profile = std::env::temp_dir().join(format!(
        "ratelimit-status-page-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,900",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(what)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        // Polled rather than waited for, so that a hung browser is killed, not waited on forever.
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(child.wait_with_output()),
                Ok(None) if started.elapsed() > BROWSER_PATIENCE => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Ok(Err(e)),
            }
        }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let output = match output {
        Ok(output) => output.expect("chromium ran"),
        Err(()) => panic!("chromium did not finish within {BROWSER_PATIENCE:?}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The text inside the element with `id`, markup included (up to its first closing tag).
fn inner<'a>(dom: &'a str, id: &str, closing: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let open_end = dom[at..].find('>').map(|i| at + i + 1).unwrap();
    let close = dom[open_end..]
        .find(closing)
        .map(|i| open_end + i)
        .unwrap_or_else(|| panic!("#{id} is not closed by {closing}"));
    &dom[open_end..close]
}

/// The number shown in the element with `id` (thousands separators dropped).
fn number(dom: &str, id: &str) -> f64 {
    let text: String = inner(dom, id, "<")
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    text.parse()
        .unwrap_or_else(|_| panic!("#{id} shows no number: {:?}", inner(dom, id, "<")))
}

/// The points of the chart's polyline `id`.
fn points(dom: &str, id: &str) -> usize {
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).unwrap_or_else(|| panic!("no #{id}"));
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    let points = tag
        .split("points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("");
    points
        .split_whitespace()
        .filter(|p| p.contains(','))
        .count()
}

async fn backend() -> SocketAddr {
    let app = Router::new().fallback(|| async { StatusCode::OK });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// Sends as `client` until `stop`, pausing `pause` between requests.
fn traffic(
    http: HttpClient,
    gateway: SocketAddr,
    client: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let request = Request::builder()
                .uri(format!("http://{gateway}/api/orders"))
                .header("x-forwarded-for", &client)
                .body(Body::empty())
                .unwrap();
            // The answer (200, 429) does not matter here, only that the gateway decided.
            let _ = http.request(request).await;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    })
}

async fn until<F: FnMut() -> bool>(what: &str, mut condition: F) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_live_numbers_and_an_anomaly_action_in_a_browser() {
    let browser = match chromium() {
        Ok(browser) => browser,
        Err(reason) => {
            println!("skipped: no Chromium ({reason})");
            return;
        }
    };
    let began = Instant::now();
    let tick = Duration::from_millis(200);
    let gateway = start(
        "127.0.0.1:0".parse().unwrap(),
        backend().await,
        GatewayConfig {
            per_client: 50,
            global: 1_000_000,
            anomaly: ControllerConfig {
                tick,
                detector: DetectorConfig {
                    warmup_ticks: 10,
                    ..DetectorConfig::default()
                },
                // A key five times the median heavy client, and 20 requests a tick (100 a second):
                // the abusive client below, never the normal ones (a few a tick each).
                key_peer_factor: 5.0,
                penalty_ttl: Duration::from_secs(300),
                ..ControllerConfig::default()
            },
            ..GatewayConfig::default()
        },
    )
    .await
    .unwrap();
    let at = gateway.address;
    let url = format!("http://{at}/status");
    let http = client();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load: Vec<_> = (1..=6)
        .map(|i| {
            traffic(
                http.clone(),
                at,
                format!("10.0.0.{i}"),
                Duration::from_millis(50),
                stop.clone(),
            )
        })
        .collect();

    // Under normal load, past the controller's warm-up, with a few samples in the history.
    until("samples of normal load, the controller warmed up", || {
        let snapshot = gateway.status.snapshot();
        snapshot.history.len() >= 3
            && snapshot.totals.decisions > 0
            && gateway.anomaly.status().ticks > 15
    })
    .await;
    let first = browse(&browser, &url, "--dump-dom").await;
    assert!(first.contains("<svg id=\"chart\""), "no chart:\n{first}");
    assert!(points(&first, "line-decisions") >= 3, "no line:\n{first}");
    assert!(inner(&first, "store-health", "<").contains("healthy"));
    let decisions_before = number(&first, "decisions-total");
    assert!(decisions_before > 0.0, "{first}");
    assert!(
        !inner(&first, "actions", "</tbody>").contains(ABUSIVE),
        "an action on {ABUSIVE} before it came:\n{first}"
    );

    // The abusive client: two senders without a pause, far above its peers and its own limit.
    for _ in 0..2 {
        load.push(traffic(
            http.clone(),
            at,
            ABUSIVE.to_string(),
            Duration::ZERO,
            stop.clone(),
        ));
    }
    until("the controller to block the abusive client", || {
        gateway.status.snapshot().anomaly.is_some_and(|a| {
            a.active
                .iter()
                .any(|action| action.action.contains(ABUSIVE) && action.applied)
        })
    })
    .await;
    let second = browse(&browser, &url, "--dump-dom").await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let decisions_after = number(&second, "decisions-total");
    assert!(
        decisions_after > decisions_before,
        "the numbers did not move: {decisions_before} then {decisions_after}"
    );
    assert!(number(&second, "denials-total") > 0.0, "{second}");
    assert!(
        points(&second, "line-decisions") > points(&first, "line-decisions"),
        "the chart did not grow"
    );
    let actions = inner(&second, "actions", "</tbody>");
    assert!(
        actions.contains(&format!("blocked {ABUSIVE}")) && actions.contains("KeyRate"),
        "no anomaly action on the page:\n{actions}"
    );
    assert!(actions.contains(" s<"), "no time left shown:\n{actions}");
    let limited = inner(&second, "limited", "</tbody>");
    assert!(
        limited.contains(ABUSIVE),
        "not among the most limited keys:\n{limited}"
    );
    let recent = inner(&second, "recent", "</ul>");
    assert!(recent.contains("KeyRate"), "no explanation:\n{recent}");
    println!(
        "status page in Chromium: {decisions_before} then {decisions_after} decisions, the \
         action shown; {:.1} s",
        began.elapsed().as_secs_f64()
    );
}
