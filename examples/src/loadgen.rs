//! A load generator: streams of requests at fixed rates from named clients, with a progress line
//! and a summary table (sent, admitted, limited, other errors, latency percentiles).
//!
//! Its memory does not grow with the run: latencies go into a fixed-size histogram per load, and
//! finished requests are reaped as new ones start.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use hdrhistogram::{CreationError, Histogram};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::proxy::client;

/// One stream of requests.
#[derive(Debug, Clone)]
pub struct Load {
    /// Its name in the table.
    pub name: String,
    /// The client addresses it sends as (`X-Forwarded-For`), in turn.
    pub clients: Vec<String>,
    /// Requests a second, all clients together.
    pub per_second: u32,
    /// When it starts, from the run's start.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
    /// The method and path it calls.
    pub method: Method,
    /// The path.
    pub path: String,
}

/// The slowest latency told apart, in nanoseconds: every answer comes within the 5 s timeout, so
/// 10 s leaves room; anything slower is recorded as 10 s.
const SLOWEST_NANOS: u64 = 10_000_000_000;

/// What one load saw.
#[derive(Debug, Clone)]
pub struct Row {
    /// The load's name.
    pub name: String,
    /// Requests sent.
    pub sent: u64,
    /// 2xx answers.
    pub admitted: u64,
    /// 429 answers.
    pub limited: u64,
    /// Anything else (including no answer).
    pub errors: u64,
    /// Latencies of every answer in nanoseconds, to three significant digits (1 ns to 10 s).
    pub latencies: Histogram<u64>,
}

impl Row {
    /// An empty row for the load `name`.
    pub fn new(name: &str) -> Result<Self, CreationError> {
        Ok(Row {
            name: name.to_string(),
            sent: 0,
            admitted: 0,
            limited: 0,
            errors: 0,
            latencies: Histogram::new_with_bounds(1, SLOWEST_NANOS, 3)?,
        })
    }

    /// The `q` quantile of the latencies (zero with none).
    pub fn latency(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latencies.value_at_quantile(q))
    }
}

/// Runs `loads` against `target`; shows a progress line on a terminal when `progress` is set.
pub async fn run(
    target: SocketAddr,
    loads: Vec<Load>,
    progress: bool,
) -> Result<Vec<Row>, CreationError> {
    let client = client();
    let rows: Arc<Vec<Mutex<Row>>> = Arc::new(
        loads
            .iter()
            .map(|l| Row::new(&l.name).map(Mutex::new))
            .collect::<Result<_, _>>()?,
    );
    let started = Instant::now();
    let end = loads
        .iter()
        .map(|l| l.start + l.duration)
        .max()
        .unwrap_or_default();
    let mut streams = Vec::new();
    for (index, load) in loads.into_iter().enumerate() {
        let (client, rows) = (client.clone(), rows.clone());
        streams.push(tokio::spawn(async move {
            tokio::time::sleep(load.start).await;
            let every = Duration::from_secs(1) / load.per_second.max(1);
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let until = Instant::now() + load.duration;
            let mut n = 0usize;
            let mut inflight = JoinSet::new();
            while Instant::now() < until {
                interval.tick().await;
                // Reap what has finished, so a long run holds only the requests in flight.
                while inflight.try_join_next().is_some() {}
                let from = load.clients[n % load.clients.len().max(1)].clone();
                n += 1;
                let (client, rows, method, path) = (
                    client.clone(),
                    rows.clone(),
                    load.method.clone(),
                    load.path.clone(),
                );
                inflight.spawn(async move {
                    let request = Request::builder()
                        .method(method)
                        .uri(format!("http://{target}{path}"))
                        .header("x-forwarded-for", from)
                        .header("authorization", "Bearer demo")
                        .body(Body::empty());
                    let Ok(request) = request else { return };
                    let sent = Instant::now();
                    let answer =
                        tokio::time::timeout(Duration::from_secs(5), client.request(request)).await;
                    let latency = sent.elapsed();
                    let mut row = rows[index].lock();
                    row.sent += 1;
                    match answer {
                        Ok(Ok(response)) => {
                            let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                            row.latencies.saturating_record(nanos.max(1));
                            match response.status() {
                                s if s.is_success() => row.admitted += 1,
                                StatusCode::TOO_MANY_REQUESTS => row.limited += 1,
                                _ => row.errors += 1,
                            }
                        }
                        _ => row.errors += 1,
                    }
                });
            }
            // A request's task only counts its answer; one that panicked has nothing to count.
            while inflight.join_next().await.is_some() {}
        }));
    }
    let reporter = progress.then(|| {
        let rows = rows.clone();
        // On stderr, drawn only on a terminal (indicatif hides it otherwise), so the table on
        // stdout stays clean when piped.
        let bar = ProgressBar::new(end.as_secs());
        // The template is fixed and valid; the default style would only lose the counts' layout.
        bar.set_style(
            ProgressStyle::with_template("  {pos:>3}s / {len}s   {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                show(&shown, &rows, started);
            }
        });
        (bar, task)
    });
    for stream in streams {
        let _ = stream.await;
    }
    if let Some((bar, task)) = reporter {
        task.abort();
        show(&bar, &rows, started);
        bar.finish();
        // The finished line stays; what is printed next starts below it.
        if !bar.is_hidden() {
            eprintln!();
        }
    }
    Ok(rows.iter().map(|row| row.lock().clone()).collect())
}

/// Updates the progress line: seconds run, and requests sent, admitted and limited in all.
fn show(bar: &ProgressBar, rows: &[Mutex<Row>], started: Instant) {
    let (mut sent, mut admitted, mut limited) = (0, 0, 0);
    for row in rows {
        let row = row.lock();
        sent += row.sent;
        admitted += row.admitted;
        limited += row.limited;
    }
    bar.set_position(started.elapsed().as_secs());
    bar.set_message(format!(
        "sent {sent:>7}   admitted {admitted:>7}   limited {limited:>7}"
    ));
}

/// The summary table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "load", "sent", "admitted", "limited", "errors", "p50", "p95", "p99"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>9} {:>8} {:>7} {:>9.2?} {:>9.2?} {:>9.2?}",
            row.name,
            row.sent,
            row.admitted,
            row.limited,
            row.errors,
            row.latency(0.5),
            row.latency(0.95),
            row.latency(0.99)
        );
    }
    out
}
