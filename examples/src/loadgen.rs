//! A load generator: streams of requests at fixed rates from named clients, with a progress line
//! and a summary table (sent, admitted, limited, other errors, latency percentiles).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use parking_lot::Mutex;

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

/// What one load saw.
#[derive(Debug, Clone, Default)]
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
    /// Latencies of every answer, sorted when the run ends.
    pub latencies: Vec<Duration>,
}

impl Row {
    /// The `q` quantile of the latencies (zero with none).
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }
}

/// Runs `loads` against `target`; prints a progress line each second when `progress` is set.
pub async fn run(target: SocketAddr, loads: Vec<Load>, progress: bool) -> Vec<Row> {
    let client = client();
    let rows: Arc<Vec<Mutex<Row>>> = Arc::new(
        loads
            .iter()
            .map(|l| {
                Mutex::new(Row {
                    name: l.name.clone(),
                    ..Row::default()
                })
            })
            .collect(),
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
            let mut inflight = Vec::new();
            while Instant::now() < until {
                interval.tick().await;
                let from = load.clients[n % load.clients.len().max(1)].clone();
                n += 1;
                let (client, rows, method, path) = (
                    client.clone(),
                    rows.clone(),
                    load.method.clone(),
                    load.path.clone(),
                );
                inflight.push(tokio::spawn(async move {
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
                            row.latencies.push(latency);
                            match response.status() {
                                s if s.is_success() => row.admitted += 1,
                                StatusCode::TOO_MANY_REQUESTS => row.limited += 1,
                                _ => row.errors += 1,
                            }
                        }
                        _ => row.errors += 1,
                    }
                }));
            }
            for request in inflight {
                let _ = request.await;
            }
        }));
    }
    let reporter = progress.then(|| {
        let rows = rows.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (mut sent, mut admitted, mut limited) = (0, 0, 0);
                for row in rows.iter() {
                    let row = row.lock();
                    sent += row.sent;
                    admitted += row.admitted;
                    limited += row.limited;
                }
                eprint!(
                    "\r  {:>3.0}s / {:.0}s   sent {sent:>7}   admitted {admitted:>7}   limited {limited:>7}   ",
                    started.elapsed().as_secs_f64(),
                    end.as_secs_f64()
                );
            }
        })
    });
    for stream in streams {
        let _ = stream.await;
    }
    if let Some(reporter) = reporter {
        reporter.abort();
        eprintln!();
    }
    rows.iter()
        .map(|row| {
            let mut row = row.lock().clone();
            row.latencies.sort_unstable();
            row
        })
        .collect()
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
