//! The hot path: what every request records, and the tick that turns it into [`TickStats`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::cohort::{CohortConfig, Cohorts, Persistence, PersistenceConfig};
use crate::health::{
    CohortHealth, HealthCounters, LATENCY_BUCKETS, drain, latency_bucket, percentile,
};
use crate::sketch::{CountMin, HeavyHitter, HyperLogLog, TopK, hash_key};

/// The ways requests are keyed: each has its own sketches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// The client's address.
    Client,
    /// The caller's credential (API key, principal).
    ApiKey,
    /// The route or gRPC method.
    Route,
}

impl Dimension {
    /// Every dimension, in index order.
    pub const ALL: [Dimension; 3] = [Dimension::Client, Dimension::ApiKey, Dimension::Route];

    fn index(self) -> usize {
        match self {
            Dimension::Client => 0,
            Dimension::ApiKey => 1,
            Dimension::Route => 2,
        }
    }
}

/// Which cohort a client belongs to, as the monitor sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Seen in the normal state in two epochs apart: keeps its own limits during an anomaly.
    Established,
    /// Not established, and not (yet) coming persistently: shares the newcomers' budget.
    Newcomer,
    /// Not established, and active in many ticks of one session: shares the persistent
    /// newcomers' (smaller) budget.
    Persistent,
}

/// One request, as the monitor sees it: its keys (where known) and whether it was limited.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEvent<'a> {
    /// The client's address, as text.
    pub client: Option<&'a str>,
    /// The caller's credential.
    pub api_key: Option<&'a str>,
    /// The route.
    pub route: Option<&'a str>,
    /// Whether a limit refused it.
    pub limited: bool,
}

/// Sizes of the monitor's fixed memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Count-min counters per row, per dimension.
    pub sketch_width: usize,
    /// Heavy hitters kept per dimension and window.
    pub top_k: usize,
    /// The established-client sets ([`Cohorts`]).
    pub cohorts: CohortConfig,
    /// How long newcomers keep coming ([`Persistence`]).
    pub persistence: PersistenceConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            sketch_width: 16_384,
            top_k: 32,
            cohorts: CohortConfig {
                capacity: 1 << 18,
                ..CohortConfig::default()
            },
            persistence: PersistenceConfig::default(),
        }
    }
}

struct DimensionSketch {
    counts: CountMin,
    top: TopK,
    distinct: HyperLogLog,
}

/// Request statistics in constant memory, recorded lock-free from any number of tasks.
pub struct Monitor {
    dimensions: [DimensionSketch; 3],
    requests: AtomicU64,
    limited: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    responses: AtomicU64,
    in_flight: AtomicI64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    cohorts: Cohorts,
    persistence: Persistence,
    newcomer_requests: AtomicU64,
    persistent_requests: AtomicU64,
    persistent_limited: AtomicU64,
    newcomer_limited: AtomicU64,
    health: HealthCounters,
}

/// What one tick saw of one dimension.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DimensionStats {
    /// Distinct keys (HyperLogLog estimate).
    pub distinct: f64,
    /// The heaviest keys, heaviest first, with their estimated request counts.
    pub heavy: Vec<HeavyHitter>,
    /// Share of the tick's requests sent by the ten heaviest keys.
    pub top_share: f64,
    /// Entropy of the key distribution, normalised to [0, 1] (1: every key sends alike).
    pub entropy: f64,
}

/// What one tick saw: counts, latency, and each dimension's distribution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickStats {
    /// Requests seen.
    pub requests: u64,
    /// Requests a limit refused.
    pub limited: u64,
    /// Responses with a 4xx status (429s excluded: they are `limited`).
    pub client_errors: u64,
    /// Responses with a 5xx status.
    pub server_errors: u64,
    /// Responses seen.
    pub responses: u64,
    /// Requests in flight at the tick.
    pub in_flight: i64,
    /// Median latency of the tick's responses.
    pub latency_p50: Duration,
    /// 99th percentile latency of the tick's responses.
    pub latency_p99: Duration,
    /// Per dimension, in [`Dimension::ALL`] order.
    pub dimensions: [DimensionStats; 3],
    /// Requests from clients that are not established ([`Cohorts`]), and of those the limited.
    pub newcomer_requests: u64,
    /// Newcomers' requests that a limit refused.
    pub newcomer_limited: u64,
    /// Of the newcomers' requests, those from persistent newcomers ([`Persistence`]): machines
    /// sending every tick rather than people browsing.
    pub persistent_requests: u64,
    /// Persistent newcomers' requests that a limit refused.
    pub persistent_limited: u64,
    /// How the backend answered established clients ([`Monitor::record_response_of`]).
    pub established_health: CohortHealth,
    /// ... newcomers that are not persistent (people arriving, the long tail).
    pub newcomer_health: CohortHealth,
    /// ... persistent newcomers (where a flood's own slow or failing requests land).
    pub persistent_health: CohortHealth,
    /// When the tick was taken, in seconds since the Unix epoch: the controller compares the
    /// traffic with the seasonal baseline of that time of day.
    pub at: Option<i64>,
}

impl TickStats {
    /// The stats of `dimension`.
    pub fn dimension(&self, dimension: Dimension) -> &DimensionStats {
        &self.dimensions[dimension.index()]
    }

    /// Server errors per response (0 with no responses).
    pub fn error_ratio(&self) -> f64 {
        if self.responses == 0 {
            0.0
        } else {
            self.server_errors as f64 / self.responses as f64
        }
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new(MonitorConfig::default())
    }
}

impl Monitor {
    /// A monitor with `config`'s sizes: memory is fixed here, whatever the number of keys.
    pub fn new(config: MonitorConfig) -> Self {
        let dimension = || DimensionSketch {
            counts: CountMin::new(config.sketch_width),
            top: TopK::new(config.top_k),
            distinct: HyperLogLog::new(),
        };
        Monitor {
            dimensions: [dimension(), dimension(), dimension()],
            requests: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            cohorts: Cohorts::new(config.cohorts),
            persistence: Persistence::new(config.persistence),
            newcomer_requests: AtomicU64::new(0),
            persistent_requests: AtomicU64::new(0),
            persistent_limited: AtomicU64::new(0),
            newcomer_limited: AtomicU64::new(0),
            health: HealthCounters::new(),
        }
    }

    /// The established-client sets: the controller's driver turns their learning on and off.
    pub fn cohorts(&self) -> &Cohorts {
        &self.cohorts
    }

    /// Whether `client` is established (seen in the normal state in two epochs apart).
    pub fn is_established(&self, client: &str) -> bool {
        self.cohorts.is_established(hash_key(client))
    }

    /// Which cohort `client` belongs to now, recording nothing: what a newcomer rule asks before
    /// deciding a request.
    #[inline]
    pub fn standing(&self, client: &str) -> Standing {
        let hash = hash_key(client);
        if self.cohorts.is_established(hash) {
            Standing::Established
        } else if self.persistence.is_persistent(hash) {
            Standing::Persistent
        } else {
            Standing::Newcomer
        }
    }

    /// How long newcomers keep coming.
    pub fn persistence(&self) -> &Persistence {
        &self.persistence
    }

    /// Bytes of sketches and counters held (fixed at construction).
    pub fn memory(&self) -> usize {
        self.dimensions
            .iter()
            .map(|d| d.counts.memory() + 4096)
            .sum::<usize>()
            + self.cohorts.memory()
            + self.persistence.memory()
            + std::mem::size_of::<Self>()
    }

    /// Records a request: constant time, a few relaxed atomic operations per dimension, no
    /// allocation, no waiting.
    #[inline]
    pub fn record(&self, event: &RequestEvent<'_>) {
        // Relaxed throughout: independent statistics, read once a tick; no ordering between them
        // is needed.
        self.requests.fetch_add(1, Ordering::Relaxed);
        if event.limited {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        for (dimension, key) in [event.client, event.api_key, event.route]
            .into_iter()
            .enumerate()
        {
            if let Some(key) = key {
                let sketch = &self.dimensions[dimension];
                let hash = hash_key(key);
                if dimension == Dimension::Client.index()
                    && !self
                        .cohorts
                        .observe_persistent(hash, self.persistence.is_persistent(hash))
                {
                    self.newcomer_requests.fetch_add(1, Ordering::Relaxed);
                    if event.limited {
                        self.newcomer_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    let persistent = self.persistence.observe(hash)
                        >= self.persistence.config().persistent_ticks;
                    if persistent {
                        self.persistent_requests.fetch_add(1, Ordering::Relaxed);
                        if event.limited {
                            self.persistent_limited.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let estimate = sketch.counts.add(hash, 1);
                sketch.distinct.add(hash);
                sketch.top.offer(key, hash, estimate);
            }
        }
    }

    /// Records that a request started (for the in-flight gauge).
    #[inline]
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a response: its status and how long the request took.
    #[inline]
    pub fn record_response(&self, status: u16, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.responses.fetch_add(1, Ordering::Relaxed);
        match status {
            429 => {}
            400..=499 => {
                self.client_errors.fetch_add(1, Ordering::Relaxed);
            }
            500..=599 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.latency[latency_bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// [`record_response`](Self::record_response), also counted in the health of `client`'s
    /// cohort ([`Standing`]): the controller's health gate reads the cohorts it protects, so
    /// that an attacker's own failing or slow requests cannot make the backend look unhealthy.
    #[inline]
    pub fn record_response_of(&self, client: Option<&str>, status: u16, latency: Duration) {
        self.record_response(status, latency);
        match client {
            Some(client) if status != 429 => {
                self.health.record(self.standing(client), status, latency);
            }
            _ => {}
        }
    }

    /// Ends the tick: returns what it saw and starts the next. Call from one thread, once a tick.
    pub fn tick(&self) -> TickStats {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let latency = drain(&self.latency);
        self.cohorts.tick();
        self.persistence.tick();
        let dimensions = std::array::from_fn(|i| {
            let sketch = &self.dimensions[i];
            sketch.counts.rotate();
            let mut heavy = sketch.top.rotate();
            // Counts from the finished window's sketch: the table's own may lag a dropped offer.
            for hitter in &mut heavy {
                hitter.count = sketch.counts.previous(hitter.hash).max(hitter.count);
            }
            heavy.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
            let distinct = sketch.distinct.estimate();
            sketch.distinct.clear();
            summarize(requests, distinct, heavy)
        });
        TickStats {
            requests,
            limited: self.limited.swap(0, Ordering::Relaxed),
            client_errors: self.client_errors.swap(0, Ordering::Relaxed),
            server_errors: self.server_errors.swap(0, Ordering::Relaxed),
            responses: self.responses.swap(0, Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            latency_p50: percentile(&latency, 0.5),
            latency_p99: percentile(&latency, 0.99),
            dimensions,
            newcomer_requests: self.newcomer_requests.swap(0, Ordering::Relaxed),
            newcomer_limited: self.newcomer_limited.swap(0, Ordering::Relaxed),
            persistent_requests: self.persistent_requests.swap(0, Ordering::Relaxed),
            persistent_limited: self.persistent_limited.swap(0, Ordering::Relaxed),
            established_health: self.health.take(Standing::Established),
            newcomer_health: self.health.take(Standing::Newcomer),
            persistent_health: self.health.take(Standing::Persistent),
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_secs()).ok()),
        }
    }
}

/// Top share and entropy from the heavy hitters, treating the rest as spread evenly over the
/// remaining distinct keys.
fn summarize(requests: u64, distinct: f64, heavy: Vec<HeavyHitter>) -> DimensionStats {
    let total = requests.max(1) as f64;
    let heavy_total: f64 = heavy
        .iter()
        .map(|h| f64::from(h.count))
        .sum::<f64>()
        .min(total);
    let top_share = heavy
        .iter()
        .take(10)
        .map(|h| f64::from(h.count))
        .sum::<f64>()
        / total;
    let mut entropy = 0.0;
    for hitter in &heavy {
        let p = (f64::from(hitter.count) / total).min(1.0);
        if p > 0.0 {
            entropy -= p * p.ln();
        }
    }
    let rest = total - heavy_total;
    let rest_keys = (distinct - heavy.len() as f64).max(1.0);
    if rest > 0.0 {
        let p = rest / total / rest_keys;
        entropy -= rest / total * p.ln();
    }
    let max_entropy = distinct.max(2.0).ln();
    DimensionStats {
        distinct,
        top_share: top_share.min(1.0),
        entropy: (entropy / max_entropy).clamp(0.0, 1.0),
        heavy,
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("memory", &self.memory())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_summarises_what_was_recorded() {
        let monitor = Monitor::default();
        for i in 0..1000 {
            let client = if i % 2 == 0 {
                "10.0.0.1".to_string()
            } else {
                format!("10.1.0.{}", i % 250)
            };
            monitor.request_started();
            monitor.record(&RequestEvent {
                client: Some(&client),
                route: Some("/orders"),
                limited: i % 10 == 0,
                ..Default::default()
            });
            monitor.record_response(
                if i % 100 == 0 { 503 } else { 200 },
                Duration::from_millis(3),
            );
        }
        let stats = monitor.tick();
        assert_eq!(stats.requests, 1000);
        assert_eq!(stats.limited, 100);
        assert_eq!(stats.server_errors, 10);
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.latency_p99, Duration::from_micros(4096));
        let clients = stats.dimension(Dimension::Client);
        assert_eq!(clients.heavy[0].key, "10.0.0.1");
        assert_eq!(clients.heavy[0].count, 500);
        assert!(
            (clients.distinct - 126.0).abs() < 5.0,
            "{}",
            clients.distinct
        );
        assert!(clients.top_share > 0.5);
        let routes = stats.dimension(Dimension::Route);
        assert_eq!(routes.heavy[0].count, 1000);
        assert!(routes.entropy < 0.01);
        // The next tick starts empty.
        assert_eq!(monitor.tick().requests, 0);
    }

    #[test]
    fn entropy_is_high_for_an_even_spread_and_low_for_one_source() {
        let even = Monitor::default();
        let single = Monitor::default();
        for i in 0..10_000 {
            even.record(&RequestEvent {
                client: Some(&format!("c{}", i % 5000)),
                ..Default::default()
            });
            single.record(&RequestEvent {
                client: Some("one"),
                ..Default::default()
            });
        }
        let even = even.tick().dimension(Dimension::Client).entropy;
        let single = single.tick().dimension(Dimension::Client).entropy;
        assert!(even > 0.9, "{even}");
        assert!(single < 0.1, "{single}");
    }
}
