//! The status board: what one gateway or service reports, sampled once a second and put together
//! into a [`StatusSnapshot`] on request.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use ratelimit_anomaly::tower::AnomalyTask;
use ratelimit_core::{FailurePolicy, Limiter};

use super::anomaly::AnomalyView;
use super::history::{History, unix_seconds};
use super::limited::LimitedKeys;
use super::snapshot::{Rate, StatusSnapshot, StoreStatus};
use super::sources::Source;

/// How many of the most limited keys a snapshot lists.
const TOP_KEYS: usize = 10;

/// How often the board samples its source.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Everything one gateway or service shows on its status page.
pub struct StatusBoard {
    title: String,
    source: Box<dyn Source>,
    limiter: Arc<Limiter>,
    store_kind: String,
    limited: Arc<LimitedKeys>,
    anomaly: Option<(Arc<AnomalyTask>, Duration)>,
    history: History,
    started: Instant,
}

impl std::fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBoard")
            .field("title", &self.title)
            .field("store_kind", &self.store_kind)
            .finish_non_exhaustive()
    }
}

/// What requests meet now, in words: the store decides, or the failure policy does.
fn mode(healthy: bool, policy: FailurePolicy, replicas: u32) -> String {
    if healthy {
        return "the store decides".to_string();
    }
    match policy {
        FailurePolicy::Open => "store unavailable: every request admitted (fail open)".to_string(),
        FailurePolicy::Closed => {
            "store unavailable: every request denied (fail closed)".to_string()
        }
        FailurePolicy::LocalFallback => format!(
            "store unavailable: decided in this process, each limit shared by {replicas} \
             replica(s)"
        ),
    }
}

impl StatusBoard {
    /// A board titled `title`, reading `source`, reporting the health of `limiter`'s store, a
    /// store of kind `store_kind` (`memory`, `redis`: never an address, which may hold
    /// credentials).
    pub fn new(title: &str, source: impl Source, limiter: Arc<Limiter>, store_kind: &str) -> Self {
        StatusBoard {
            title: title.to_string(),
            source: Box::new(source),
            limiter,
            store_kind: store_kind.to_string(),
            limited: Arc::new(LimitedKeys::default()),
            anomaly: None,
            history: History::default(),
            started: Instant::now(),
        }
    }

    /// The same board showing the anomaly controller run by `task`, whose tick is `tick`.
    pub fn with_anomaly(mut self, task: Arc<AnomalyTask>, tick: Duration) -> Self {
        self.anomaly = Some((task, tick));
        self
    }

    /// The same board listing the keys recorded in `keys` (shared with whatever records the
    /// denials: the gateway's observer, the service's decisions).
    pub fn with_limited_keys(mut self, keys: Arc<LimitedKeys>) -> Self {
        self.limited = keys;
        self
    }

    /// The table of the most limited keys, to record denials into.
    pub fn limited_keys(&self) -> Arc<LimitedKeys> {
        self.limited.clone()
    }

    /// Takes one sample: the source's counters into the history, and a second of decay for the
    /// limited keys. [`start`](Self::start) calls it every [`SAMPLE_EVERY`].
    pub fn sample(&self) {
        self.history.record(Instant::now(), self.source.totals());
        self.limited.decay();
    }

    /// The board, sampled every [`SAMPLE_EVERY`] by a task on the current tokio runtime from now
    /// on. The task holds the board weakly and ends once the board is dropped.
    pub fn start(self) -> Arc<Self> {
        let board = Arc::new(self);
        let weak: Weak<Self> = Arc::downgrade(&board);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(SAMPLE_EVERY);
            // A late tick is measured as late (see `History::record`), not made up for.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(board) = weak.upgrade() else { break };
                board.sample();
            }
        });
        board
    }

    /// Everything the page shows, now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let now = SystemTime::now();
        let healthy = self.limiter.store_healthy();
        let policy = self.limiter.failure_policy();
        let replicas = self.limiter.replicas();
        StatusSnapshot {
            title: self.title.clone(),
            now: unix_seconds(now),
            uptime_seconds: self.started.elapsed().as_secs(),
            totals: self.source.totals(),
            current: self.history.latest().map_or(Rate::default(), |s| Rate {
                decisions: s.decisions,
                denials: s.denials,
            }),
            history: self.history.samples(),
            limited_keys: self.limited.top(TOP_KEYS),
            store: StoreStatus {
                kind: self.store_kind.clone(),
                healthy,
                failure_policy: format!("{policy:?}"),
                mode: mode(healthy, policy, replicas),
                replicas,
            },
            anomaly: self
                .anomaly
                .as_ref()
                .map(|(task, tick)| AnomalyView::of(&task.status(), *tick, now)),
            breakdown: self.source.breakdown(),
            facts: self.source.facts(),
        }
    }
}
