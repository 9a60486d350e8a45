//! The controller: from each tick's statistics to actions on limits, with hysteresis.
//!
//! ```text
//!            suspicious                 suspicious for confirm_ticks, backend unhealthy
//!   Normal ─────────────▶ Suspect ─────────────────────────────────────────▶ Mitigating
//!     │                  (a surge of newcomers on an unhealthy backend: at once) ▲
//!     ▲  ◀───────────────   │ (healthy: a flash crowd; watched, not acted on)   │  ▲
//!     │    calm again       │                                                   │  │ suspicious and
//!     │                                                  calm for quiet_ticks   ▼  │ unhealthy again
//!     └────────────────────────────────────────────── factor back at 1 ── Recovering
//! ```
//!
//! Global limits are tightened multiplicatively (never below the floor) while the backend is
//! unhealthy under anomalous traffic, and relaxed additively once traffic is calm. Single keys far
//! above their peers and their own past are penalised for a time to live in any state, except keys
//! on the allow list. Baselines learn only in the normal state, so an attack never becomes normal.

use std::collections::HashMap;
use std::time::Duration;

use crate::baseline::Ewma;
use crate::detector::{DetectorConfig, RateDetector};
use crate::monitor::{Dimension, TickStats};

/// What the controller watches for and how hard it acts.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// The length of a tick (turns times to live into ticks).
    pub tick: Duration,
    /// The global-rate detector's settings.
    pub detector: DetectorConfig,
    /// A detector score at or above this makes the tick suspicious.
    pub suspect_score: f64,
    /// Traffic above this multiple of its normal level (and four spreads above it) stays suspicious.
    pub elevated_factor: f64,
    /// Distinct sources above this multiple of their normal number (and four spreads above it)
    /// make the tick suspicious.
    pub sources_factor: f64,
    /// The CUSUM's threshold, in spreads accumulated beyond one spread a tick: a sustained rise of
    /// two spreads is caught in about `cusum_threshold` ticks.
    pub cusum_threshold: f64,
    /// Suspicious ticks in a row before acting.
    pub confirm_ticks: u32,
    /// Calm ticks in a row before relaxing.
    pub quiet_ticks: u32,
    /// What a tightening multiplies the global limit by.
    pub tighten_factor: f64,
    /// The lowest multiple of the configured global limit the controller sets.
    pub floor: f64,
    /// What each relaxing tick adds back, as a multiple of the configured limit.
    pub relax_step: f64,
    /// Unhealthy: p99 latency above this multiple of its normal level.
    pub latency_factor: f64,
    /// Unhealthy: server-error ratio above its normal level plus this.
    pub error_margin: f64,
    /// The dimensions whose keys may be penalised.
    pub key_dimensions: Vec<Dimension>,
    /// A key must send at least this many requests in a tick to be penalised.
    pub key_min_requests: u32,
    /// ... and this multiple of what the median heavy key sends.
    pub key_peer_factor: f64,
    /// ... and, when its past is known, this multiple of its own normal rate.
    pub key_baseline_factor: f64,
    /// How long a key's penalty lasts.
    pub penalty_ttl: Duration,
    /// Keys never penalised.
    pub allow_list: Vec<String>,
    /// Report actions without applying them.
    pub shadow: bool,
    /// Newcomers' requests (clients not established, see [`Cohorts`](crate::Cohorts)) above this
    /// multiple of their normal level, during an anomaly that hurts the backend, are met with a
    /// shared budget for newcomers before the global limit is touched.
    pub newcomer_factor: f64,
    /// The newcomers' budget per tick: this multiple of their normal requests per tick...
    pub newcomer_headroom: f64,
    /// ... and at least this many.
    pub newcomer_floor: u32,
    /// Ticks after start before the newcomers' normal level is learned. Until the cohorts have
    /// seen three epochs ([`CohortConfig::epoch_ticks`](crate::CohortConfig)) nobody can be
    /// established, so everyone is a newcomer; a level learned then would be the whole traffic,
    /// and a flood soon after start would not stand out from it (the global limit would be cut
    /// instead of the newcomers' budget set).
    pub newcomer_warmup_ticks: u64,
    /// Score each tick's feature vector (rate, limited and error ratios, latency, sources, top
    /// share, entropy) with a random cut forest; a score at or above `forest_threshold` is
    /// suspicious. `None`: off.
    #[cfg(feature = "forest")]
    pub forest: Option<crate::forest::ForestConfig>,
    /// The forest score that makes a tick suspicious.
    #[cfg(feature = "forest")]
    pub forest_threshold: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            tick: Duration::from_secs(1),
            detector: DetectorConfig::default(),
            suspect_score: 0.27,
            elevated_factor: 1.5,
            sources_factor: 2.0,
            cusum_threshold: 8.0,
            confirm_ticks: 3,
            quiet_ticks: 30,
            tighten_factor: 0.5,
            floor: 0.1,
            relax_step: 0.1,
            latency_factor: 2.0,
            error_margin: 0.05,
            key_dimensions: vec![Dimension::Client, Dimension::ApiKey],
            key_min_requests: 20,
            key_peer_factor: 20.0,
            key_baseline_factor: 5.0,
            penalty_ttl: Duration::from_secs(300),
            allow_list: Vec::new(),
            shadow: false,
            newcomer_factor: 3.0,
            newcomer_headroom: 1.0,
            newcomer_floor: 10,
            // Two epochs of the monitor's default cohorts.
            newcomer_warmup_ticks: 90,
            #[cfg(feature = "forest")]
            forest: None,
            #[cfg(feature = "forest")]
            forest_threshold: 0.75,
        }
    }
}

/// Where the controller stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Traffic as usual; baselines learn.
    Normal,
    /// Traffic is anomalous; waiting for confirmation, or healthy (a flash crowd).
    Suspect,
    /// The global limit is tightened.
    Mitigating,
    /// Traffic is calm again; the global limit is relaxing.
    Recovering,
}

/// Which signal led to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The global request rate against its baseline.
    GlobalRate,
    /// One key's rate against its peers and its past.
    KeyRate,
    /// The number of distinct sources against its normal level (the distributed-flood fingerprint).
    SourceSpread,
    /// The rate summed over a minute against its baseline (slow ramps).
    MinuteRate,
    /// The tick's whole feature vector against recent ones (the random cut forest).
    Multivariate,
    /// One route's rate against its normal level, when that route carries the surge.
    RouteRate,
    /// A sustained rise of the global rate (a one-sided CUSUM over its baseline).
    SustainedShift,
    /// Requests from identities that were not here before the anomaly, against their normal level.
    NewcomerSurge,
    /// The backend is healthy while newcomers are turned away: their budget grows.
    HealthyBackend,
    /// Traffic calm again.
    Calm,
    /// A penalty's time to live ran out.
    Expired,
}

/// Why an action was taken: the evidence, for logs and the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// The signal.
    pub signal: Signal,
    /// The detector's score, where one applies.
    pub score: f64,
    /// What was observed (requests in the tick).
    pub observed: f64,
    /// What was expected (the baseline, or the peers' average for a key).
    pub baseline: f64,
    /// The key, for key actions.
    pub key: Option<String>,
    /// How long the action lasts, where it expires.
    pub ttl: Option<Duration>,
    /// Whom the action is aimed at.
    pub cohort: Cohort,
    /// Until when it holds.
    pub until: Until,
}

/// Whom an action is aimed at: the cohort is acted on before everyone is.
#[derive(Debug, Clone, PartialEq)]
pub enum Cohort {
    /// Everyone: the global limit.
    Everyone,
    /// The requests on one route.
    Route(String),
    /// One key of a dimension (a client, an API key).
    Key {
        /// The key's dimension.
        dimension: Dimension,
        /// The key.
        key: String,
    },
    /// The clients that are not established: the identities that arrived with the anomaly.
    /// Established clients keep their own limits.
    Newcomers,
}

/// Until when an action holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// Until the controller's tick `tick`, `ttl` after it was taken (a key's penalty).
    Expires {
        /// The tick it ends at.
        tick: u64,
        /// How long after it was taken.
        ttl: Duration,
    },
    /// Until the traffic has been calm for `quiet_ticks` ticks in a row; then relaxed a step a
    /// tick.
    Calm {
        /// Calm ticks needed.
        quiet_ticks: u32,
    },
    /// Being relaxed a step each calm tick, back to the configured limits.
    Relaxing,
    /// Nothing left to hold: a lift, or the last step of a relaxation.
    Lifted,
}

impl std::fmt::Display for Cohort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cohort::Everyone => f.write_str("everyone"),
            Cohort::Route(route) => write!(f, "route {route}"),
            Cohort::Key { dimension, key } => write!(f, "{dimension:?} {key}"),
            Cohort::Newcomers => f.write_str("newcomers (clients not established)"),
        }
    }
}

impl Until {
    /// In words, with the tick the action was decided at (for the time left).
    pub fn describe(&self, tick: Duration) -> String {
        match self {
            Until::Expires { ttl, .. } => format!("for {}s", ttl.as_secs()),
            Until::Calm { quiet_ticks } => format!(
                "until the traffic is calm for {:.0}s, then relaxed step by step",
                f64::from(*quiet_ticks) * tick.as_secs_f64()
            ),
            Until::Relaxing => "relaxing a step each calm tick".to_string(),
            Until::Lifted => "lifted".to_string(),
        }
    }
}

/// What the controller asks the limiter to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Penalise one key for `ttl`.
    PenalizeKey {
        /// The key's dimension.
        dimension: Dimension,
        /// The key.
        key: String,
        /// How long.
        ttl: Duration,
        /// Why.
        reason: Reason,
    },
    /// Lift a key's penalty.
    LiftKey {
        /// The key's dimension.
        dimension: Dimension,
        /// The key.
        key: String,
        /// Why.
        reason: Reason,
    },
    /// Set one route's limit to `factor` times its configured value.
    ScaleRoute {
        /// The route.
        route: String,
        /// The new multiple (between the floor and 1).
        factor: f64,
        /// Why.
        reason: Reason,
    },
    /// Hold every client that is not established to one shared budget of `per_tick` requests a
    /// tick; established clients keep their limits.
    LimitNewcomers {
        /// Requests a tick for all newcomers together (those not persistent).
        per_tick: u32,
        /// Requests a tick for all persistent newcomers together ([`Persistence`](crate::Persistence)):
        /// sources sending every tick, held apart so that they cannot spend the budget of people
        /// arriving in a flash crowd.
        persistent_per_tick: u32,
        /// Why.
        reason: Reason,
    },
    /// Lift the newcomers' budget.
    LiftNewcomers {
        /// Why.
        reason: Reason,
    },
    /// Set the global limit to `factor` times its configured value.
    ScaleGlobal {
        /// The new multiple (between the floor and 1).
        factor: f64,
        /// Why.
        reason: Reason,
    },
}

/// An action and whether it is to be applied (false in shadow mode).
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The action.
    pub action: Action,
    /// Whether to apply it; in shadow mode actions are only reported.
    pub apply: bool,
    /// The controller's tick it was decided at.
    pub tick: u64,
}

impl Action {
    /// Why it was taken.
    pub fn reason(&self) -> &Reason {
        match self {
            Action::PenalizeKey { reason, .. }
            | Action::LiftKey { reason, .. }
            | Action::ScaleRoute { reason, .. }
            | Action::LimitNewcomers { reason, .. }
            | Action::LiftNewcomers { reason }
            | Action::ScaleGlobal { reason, .. } => reason,
        }
    }

    /// What is done, in words.
    pub fn what(&self) -> String {
        match self {
            Action::PenalizeKey { key, ttl, .. } => {
                format!("blocked {key} for {}s", ttl.as_secs())
            }
            Action::LiftKey { key, .. } => format!("unblocked {key}"),
            Action::ScaleRoute { route, factor, .. } => {
                format!("{route}'s limit at {:.0}%", factor * 100.0)
            }
            Action::LimitNewcomers {
                per_tick,
                persistent_per_tick,
                ..
            } => format!(
                "newcomers share {per_tick} requests a tick, persistent newcomers \
                 {persistent_per_tick}; established clients keep their limits"
            ),
            Action::LiftNewcomers { .. } => "newcomers' budget lifted".to_string(),
            Action::ScaleGlobal { factor, .. } => {
                format!("global limit at {:.0}%", factor * 100.0)
            }
        }
    }
}

impl Decided {
    /// The whole explanation on one line: which cohort, which signal (what was observed against
    /// what was expected), what was done, and until when; `tick` is the controller's tick length.
    pub fn explain(&self, tick: Duration) -> String {
        let reason = self.action.reason();
        format!(
            "{}{}: {} ({:?}: observed {:.0} against {:.1}, score {:.2}), {}",
            if self.apply { "" } else { "[shadow] " },
            reason.cohort,
            self.action.what(),
            reason.signal,
            reason.observed,
            reason.baseline,
            reason.score,
            reason.until.describe(tick)
        )
    }
}

/// The state machine. Feed it every tick's [`TickStats`]; apply what it returns.
#[derive(Debug)]
pub struct Controller {
    config: ControllerConfig,
    state: State,
    detector: RateDetector,
    minute_detector: RateDetector,
    minute_sum: f64,
    minute_score: f64,
    cusum: f64,
    traffic: Ewma,
    sources: Ewma,
    latency: Ewma,
    errors: Ewma,
    newcomers: Ewma,
    persistent: Ewma,
    newcomer_budget: Option<(u32, u32)>,
    last_healthy: bool,
    key_history: HashMap<(Dimension, String), Ewma>,
    route_history: HashMap<String, Ewma>,
    route_factors: HashMap<String, f64>,
    penalties: HashMap<(Dimension, String), u64>,
    factor: f64,
    suspicious_for: u32,
    calm_for: u32,
    tick: u64,
    last_tightened: u64,
    last_score: f64,
    #[cfg(feature = "forest")]
    forest: Option<crate::forest::RandomCutForest>,
}

/// What a typical heavy key sends: the median of the heavy hitters (at least 1). Against the
/// median rather than the mean of all keys, so that a naturally skewed (Zipf) population does not
/// make its head look abusive.
fn peer_rate(heavy: &[crate::sketch::HeavyHitter]) -> f64 {
    if heavy.is_empty() {
        return 1.0;
    }
    let mut counts: Vec<u32> = heavy.iter().map(|h| h.count).collect();
    counts.sort_unstable();
    f64::from(counts[counts.len() / 2]).max(1.0)
}

/// Responses of a cohort in a tick needed to judge the backend's health on that cohort.
const COHORT_HEALTH_MIN: u64 = 50;

/// Keys whose history is kept: the heavy hitters of recent ticks, bounded.
const KEY_HISTORY: usize = 4096;

/// The history of `key` in `histories`, made when missing. When the table is full, the history
/// seen least often makes room: a flood of one-tick keys only displaces its own kind, and the
/// histories of keys seen for a long time survive any churn (starting over when full, as before,
/// let an attacker wipe every key's past by cycling keys through the heavy hitters).
fn remember<K: std::hash::Hash + Eq + Clone>(
    histories: &mut HashMap<K, Ewma>,
    key: K,
    half_life: f64,
) -> &mut Ewma {
    if histories.len() >= KEY_HISTORY && !histories.contains_key(&key) {
        let newest = histories
            .iter()
            .min_by_key(|(_, history)| history.seen())
            .map(|(k, _)| k.clone());
        if let Some(newest) = newest {
            histories.remove(&newest);
        }
    }
    histories
        .entry(key)
        .or_insert_with(|| Ewma::with_half_life(half_life))
}

impl Controller {
    /// A controller in the normal state.
    pub fn new(config: ControllerConfig) -> Self {
        Controller {
            detector: RateDetector::new(config.detector),
            minute_detector: RateDetector::new(DetectorConfig {
                // A minute a tick: fewer, slower observations.
                warmup_ticks: 10,
                baseline_half_life: 30.0,
                hold_ticks: 10,
                seasonal_buckets: 0,
                ..config.detector
            }),
            minute_sum: 0.0,
            minute_score: 0.0,
            cusum: 0.0,
            config: config.clone(),
            state: State::Normal,
            traffic: Ewma::with_half_life(300.0),
            sources: Ewma::with_half_life(300.0),
            latency: Ewma::with_half_life(300.0),
            errors: Ewma::with_half_life(300.0),
            newcomers: Ewma::with_half_life(300.0),
            persistent: Ewma::with_half_life(300.0),
            newcomer_budget: None,
            last_healthy: true,
            key_history: HashMap::new(),
            route_history: HashMap::new(),
            route_factors: HashMap::new(),
            penalties: HashMap::new(),
            factor: 1.0,
            suspicious_for: 0,
            calm_for: 0,
            tick: 0,
            last_tightened: 0,
            last_score: 0.0,
            #[cfg(feature = "forest")]
            forest: config.forest.map(crate::forest::RandomCutForest::new),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The global-rate detector's score at the last tick.
    pub fn last_score(&self) -> f64 {
        self.last_score
    }

    /// The current multiple of the configured global limit.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// Keys penalised now, with the tick their penalty ends.
    pub fn penalties(&self) -> impl Iterator<Item = (&(Dimension, String), &u64)> {
        self.penalties.iter()
    }

    /// Decides this tick's actions from its statistics.
    pub fn on_tick(&mut self, stats: &TickStats) -> Vec<Decided> {
        self.tick += 1;
        let mut actions = Vec::new();
        self.expire_penalties(&mut actions);

        let requests = stats.requests as f64;
        let score = self.detector.update_at(stats.at, requests);
        self.last_score = score;
        let healthy = self.healthy(stats);
        self.last_healthy = healthy;
        // What this time of day usually brings, once the seasonal baseline knows it; the flat
        // baseline before. Against the flat one, every morning's rise looks like a flood.
        let expected = stats
            .at
            .and_then(|t| self.detector.expected_at(t))
            .unwrap_or_else(|| self.traffic.mean());
        let elevated = self.traffic.seen() > 10
            && requests > self.config.elevated_factor * expected
            && requests > expected + 4.0 * self.traffic.std_dev();
        // The rolled-up minute: a ramp too slow for the per-tick detector is a jump per minute.
        self.minute_sum += requests;
        let ticks_per_minute = (60.0 / self.config.tick.as_secs_f64()).round().max(1.0) as u64;
        if self.tick % ticks_per_minute == 0 {
            self.minute_score = self.minute_detector.update_at(stats.at, self.minute_sum);
            self.minute_sum = 0.0;
        }
        // The distributed-flood fingerprint: many more sources than usual.
        let distinct = stats.dimension(Dimension::Client).distinct;
        let spread = self.sources.seen() > 10
            && distinct > self.config.sources_factor * self.sources.mean()
            && distinct > self.sources.mean() + 4.0 * self.sources.std_dev();
        // Page's CUSUM of the standardised rate: small rises that persist add up.
        if self.traffic.seen() > 10 {
            let spread = self
                .traffic
                .std_dev()
                .max(self.traffic.mean().abs() * 1e-3)
                .max(1e-9);
            let z = (requests - expected) / spread;
            // An allowance of one spread a tick, and a ceiling at the threshold so that it forgets
            // within a few ticks once the rise ends.
            self.cusum = (self.cusum + z - 1.0).clamp(0.0, self.config.cusum_threshold);
        }
        // It starts mitigation; it does not hold it (the baseline is frozen while mitigating, and
        // the daily cycle would keep the sum up).
        let shifted = self.cusum >= self.config.cusum_threshold
            && matches!(self.state, State::Normal | State::Suspect);
        let ramping = self.minute_score >= self.config.suspect_score || shifted;
        let (unusual, forest_score) = self.multivariate(stats);
        let suspicious =
            score >= self.config.suspect_score || elevated || spread || ramping || unusual;
        let calm = Until::Calm {
            quiet_ticks: self.config.quiet_ticks,
        };
        let reason = if score >= self.config.suspect_score || elevated {
            Reason {
                signal: Signal::GlobalRate,
                score,
                observed: requests,
                baseline: expected,
                key: None,
                ttl: None,
                cohort: Cohort::Everyone,
                until: calm,
            }
        } else if spread {
            Reason {
                signal: Signal::SourceSpread,
                score,
                observed: distinct,
                baseline: self.sources.mean(),
                key: None,
                ttl: None,
                cohort: Cohort::Everyone,
                until: calm,
            }
        } else if unusual {
            Reason {
                signal: Signal::Multivariate,
                score: forest_score,
                observed: requests,
                baseline: self.traffic.mean(),
                key: None,
                ttl: None,
                cohort: Cohort::Everyone,
                until: calm,
            }
        } else if shifted {
            Reason {
                signal: Signal::SustainedShift,
                score: self.cusum,
                observed: requests,
                baseline: self.traffic.mean(),
                key: None,
                ttl: None,
                cohort: Cohort::Everyone,
                until: calm,
            }
        } else {
            Reason {
                signal: Signal::MinuteRate,
                score: self.minute_score,
                observed: requests,
                baseline: self.traffic.mean(),
                key: None,
                ttl: None,
                cohort: Cohort::Everyone,
                until: calm,
            }
        };

        // While mitigating, what keeps a tightening: any signal but "elevated" alone on a healthy
        // backend. The baseline is frozen while mitigating, so traffic that settles above it (the
        // day's peak after a night-time flood) would be "elevated" for ever and hold the
        // tightening with nothing wrong. Newcomers above their normal level hold it too (a flood
        // met by the newcomers' budget keeps the backend healthy).
        let newcomer_surge = self.newcomers.seen() > 10
            && stats.newcomer_requests as f64
                > self.config.newcomer_factor * self.newcomers.mean().max(1.0);
        let holding = score >= self.config.suspect_score
            || spread
            || ramping
            || unusual
            || newcomer_surge
            || (elevated && !healthy);
        let unsettled = match self.state {
            State::Normal | State::Suspect => suspicious,
            State::Mitigating | State::Recovering => holding,
        };
        if unsettled {
            self.suspicious_for += 1;
            self.calm_for = 0;
        } else {
            self.suspicious_for = 0;
            self.calm_for += 1;
        }
        // Newcomers far above their normal level on an unhealthy backend are met at once, with no
        // confirmation: their budget touches only identities that arrived with the anomaly, and
        // every tick of waiting is a tick in which the global limit alone stands and refuses the
        // clients who were already here as often as the flood.
        let meet_newcomers_now = suspicious && !healthy && newcomer_surge;
        match self.state {
            State::Normal => {
                if meet_newcomers_now && self.newcomer_budget.is_none() {
                    self.state = State::Mitigating;
                    self.tighten(stats, reason, &mut actions);
                } else if suspicious {
                    self.state = State::Suspect;
                } else {
                    self.learn(stats);
                }
            }
            State::Suspect => {
                // A rise on a healthy backend that comes from the clients already here (the
                // newcomers and the number of sources at their normal levels) is a new normal,
                // not an attack: the baselines follow it, or the controller would stay suspect
                // for ever after, say, a deploy that made every client faster. The newcomers'
                // and the sources' levels cannot be raised this way by a flood: it is a surge of
                // both.
                if healthy && !newcomer_surge && !spread {
                    self.learn(stats);
                }
                if !suspicious {
                    self.state = State::Normal;
                } else if !healthy
                    && (self.suspicious_for >= self.config.confirm_ticks
                        || (meet_newcomers_now && self.newcomer_budget.is_none()))
                {
                    self.state = State::Mitigating;
                    self.tighten(stats, reason, &mut actions);
                }
            }
            State::Mitigating | State::Recovering => {
                if suspicious && !healthy {
                    self.state = State::Mitigating;
                    if self.tick - self.last_tightened >= u64::from(self.config.confirm_ticks) {
                        self.tighten(stats, reason, &mut actions);
                    }
                } else if self.state == State::Mitigating {
                    if healthy {
                        self.grow_newcomer_budget(stats, &mut actions);
                    }
                    if self.calm_for >= self.config.quiet_ticks {
                        self.state = State::Recovering;
                    }
                } else if !holding {
                    self.relax(reason, &mut actions);
                }
            }
        }
        self.judge_keys(stats, &mut actions);
        let (apply, tick) = (!self.config.shadow, self.tick);
        actions
            .into_iter()
            .map(|action| Decided {
                action,
                apply,
                tick,
            })
            .collect()
    }

    /// The forest's verdict on the tick's feature vector: (suspicious, score). It learns only from
    /// normal ticks.
    #[cfg(feature = "forest")]
    fn multivariate(&mut self, stats: &TickStats) -> (bool, f64) {
        let Some(forest) = self.forest.as_mut() else {
            return (false, 0.0);
        };
        let requests = stats.requests.max(1) as f64;
        let clients = stats.dimension(Dimension::Client);
        let features = [
            (1.0 + stats.requests as f64).ln(),
            stats.limited as f64 / requests,
            stats.error_ratio(),
            (1.0 + stats.latency_p99.as_micros() as f64).ln(),
            (1.0 + clients.distinct).ln(),
            clients.top_share,
            clients.entropy,
        ];
        let score = if self.state == State::Normal {
            forest.update(&features)
        } else {
            forest.score(&features)
        };
        (score >= self.config.forest_threshold, score)
    }

    #[cfg(not(feature = "forest"))]
    fn multivariate(&mut self, _stats: &TickStats) -> (bool, f64) {
        (false, 0.0)
    }

    fn healthy(&self, stats: &TickStats) -> bool {
        if self.latency.seen() < 10 {
            return true; // nothing to compare with yet
        }
        // Measured per cohort: the established clients' own health when there are enough of their
        // responses; else theirs with the newcomers who are not persistent (people arriving); the
        // whole only when neither says enough. Persistent newcomers (where a flood's sources are)
        // never count while another cohort can speak: an attacker's own slow or failing requests
        // say nothing about how the backend serves others.
        let established = stats.established_health;
        let legitimate = established.merged(&stats.newcomer_health);
        let (p99, error_ratio) = if established.responses >= COHORT_HEALTH_MIN {
            (
                established.latency_p99().as_secs_f64(),
                established.error_ratio(),
            )
        } else if legitimate.responses >= COHORT_HEALTH_MIN {
            (
                legitimate.latency_p99().as_secs_f64(),
                legitimate.error_ratio(),
            )
        } else {
            (stats.latency_p99.as_secs_f64(), stats.error_ratio())
        };
        let slow = p99 > self.config.latency_factor * self.latency.mean().max(1e-6);
        let failing = error_ratio > self.errors.mean() + self.config.error_margin;
        !(slow || failing)
    }

    fn learn(&mut self, stats: &TickStats) {
        self.traffic.update(stats.requests as f64);
        if self.tick > self.config.newcomer_warmup_ticks {
            self.newcomers.update(stats.newcomer_requests as f64);
            self.persistent.update(stats.persistent_requests as f64);
        }
        for hitter in &stats.dimension(Dimension::Route).heavy {
            remember(&mut self.route_history, hitter.key.clone(), 300.0)
                .update(f64::from(hitter.count));
        }
        self.sources
            .update(stats.dimension(Dimension::Client).distinct);
        if stats.responses > 0 {
            self.latency.update(stats.latency_p99.as_secs_f64());
            self.errors.update(stats.error_ratio());
        }
    }

    /// Tightens where the surge is: one route, when a single route carries most of it (its rise
    /// over its normal level is at least 80% of the total rise); otherwise the global limit.
    fn tighten(&mut self, stats: &TickStats, reason: Reason, actions: &mut Vec<Action>) {
        self.last_tightened = self.tick;
        // The cohort that arrived with the anomaly first: a shared budget for newcomers sized from
        // their normal level, before anyone who was already here is touched. Persistent newcomers
        // (sources active every tick) get a budget of their own, sized from theirs, so that a flood
        // cannot spend the budget of people arriving with it.
        let newcomers = stats.newcomer_requests as f64;
        let normal = self.newcomers.mean();
        let floor = self.config.newcomer_floor;
        let newcomers_reason = |observed: f64, baseline: f64| Reason {
            signal: Signal::NewcomerSurge,
            observed,
            baseline,
            key: None,
            cohort: Cohort::Newcomers,
            ..reason.clone()
        };
        match self.newcomer_budget {
            None if self.newcomers.seen() > 10
                && newcomers > self.config.newcomer_factor * normal.max(1.0) =>
            {
                let headroom = self.config.newcomer_headroom;
                let normal_persistent = self.persistent.mean().min(normal);
                let fresh = ((headroom * (normal - normal_persistent)).ceil() as u32).max(floor);
                let persistent = ((headroom * normal_persistent).ceil() as u32).max(floor);
                self.newcomer_budget = Some((fresh, persistent));
                actions.push(Action::LimitNewcomers {
                    per_tick: fresh,
                    persistent_per_tick: persistent,
                    reason: newcomers_reason(newcomers, normal),
                });
                return;
            }
            // Still hurting with the budget in force: halve what the newcomers share (it grows
            // again while the backend is healthy) before touching anyone else.
            Some((fresh, persistent)) if fresh > floor => {
                let fresh = ((f64::from(fresh) * self.config.tighten_factor) as u32).max(floor);
                self.newcomer_budget = Some((fresh, persistent));
                actions.push(Action::LimitNewcomers {
                    per_tick: fresh,
                    persistent_per_tick: persistent,
                    reason: newcomers_reason(newcomers, normal),
                });
                return;
            }
            _ => {}
        }
        if let Some((route, rate, normal)) = self.surging_route(stats) {
            let before = self.route_factors.get(&route).copied().unwrap_or(1.0);
            let factor = (before * self.config.tighten_factor).max(self.config.floor);
            if factor < before {
                self.route_factors.insert(route.clone(), factor);
                actions.push(Action::ScaleRoute {
                    reason: Reason {
                        signal: Signal::RouteRate,
                        observed: rate,
                        baseline: normal,
                        key: Some(route.clone()),
                        cohort: Cohort::Route(route.clone()),
                        ..reason
                    },
                    route,
                    factor,
                });
            }
            return;
        }
        let factor = (self.factor * self.config.tighten_factor).max(self.config.floor);
        if factor < self.factor {
            self.factor = factor;
            actions.push(Action::ScaleGlobal { factor, reason });
        }
    }

    /// While mitigating on a healthy backend, newcomers (not persistent) turned away for want of
    /// budget get more of it: doubled, up to what they asked for, once a tightening has had
    /// `confirm_ticks` to show its effect. A flash crowd arriving during a flood is served once the
    /// flood's persistent sources are held to their own budget; if the crowd itself makes the
    /// backend unhealthy, the next tightening halves the budget again.
    fn grow_newcomer_budget(&mut self, stats: &TickStats, actions: &mut Vec<Action>) {
        let Some((fresh, persistent)) = self.newcomer_budget else {
            return;
        };
        if self.tick - self.last_tightened < u64::from(self.config.confirm_ticks) {
            return;
        }
        let asked = stats
            .newcomer_requests
            .saturating_sub(stats.persistent_requests);
        let refused = stats
            .newcomer_limited
            .saturating_sub(stats.persistent_limited);
        if refused == 0 || asked <= u64::from(fresh) {
            return;
        }
        let grown = u32::try_from(asked)
            .unwrap_or(u32::MAX)
            .min(fresh.saturating_mul(2));
        self.newcomer_budget = Some((grown, persistent));
        actions.push(Action::LimitNewcomers {
            per_tick: grown,
            persistent_per_tick: persistent,
            reason: Reason {
                signal: Signal::HealthyBackend,
                score: 0.0,
                observed: asked as f64,
                baseline: f64::from(fresh),
                key: None,
                ttl: None,
                cohort: Cohort::Newcomers,
                until: Until::Calm {
                    quiet_ticks: self.config.quiet_ticks,
                },
            },
        });
    }

    fn surging_route(&self, stats: &TickStats) -> Option<(String, f64, f64)> {
        let rise = stats.requests as f64 - self.traffic.mean();
        if rise <= 0.0 {
            return None;
        }
        stats
            .dimension(Dimension::Route)
            .heavy
            .iter()
            .filter_map(|hitter| {
                let normal = self.route_history.get(&hitter.key)?.mean();
                let rate = f64::from(hitter.count);
                (rate - normal >= 0.8 * rise).then(|| (hitter.key.clone(), rate, normal))
            })
            .next()
    }

    fn relax(&mut self, reason: Reason, actions: &mut Vec<Action>) {
        let step = |factor: f64, by: f64| {
            let relaxed = (factor + by).min(1.0);
            // Steps of 0.1 add up to 0.9999999999999999.
            if relaxed > 1.0 - 1e-9 { 1.0 } else { relaxed }
        };
        let calm = Reason {
            signal: Signal::Calm,
            ..reason
        };
        let until = |factor: f64| {
            if factor >= 1.0 {
                Until::Lifted
            } else {
                Until::Relaxing
            }
        };
        if self.factor < 1.0 {
            self.factor = step(self.factor, self.config.relax_step);
            actions.push(Action::ScaleGlobal {
                factor: self.factor,
                reason: Reason {
                    cohort: Cohort::Everyone,
                    until: until(self.factor),
                    ..calm.clone()
                },
            });
        }
        let mut routes: Vec<String> = self.route_factors.keys().cloned().collect();
        routes.sort();
        for route in routes {
            let factor = step(self.route_factors[&route], self.config.relax_step);
            if factor >= 1.0 {
                self.route_factors.remove(&route);
            } else {
                self.route_factors.insert(route.clone(), factor);
            }
            actions.push(Action::ScaleRoute {
                reason: Reason {
                    cohort: Cohort::Route(route.clone()),
                    until: until(factor),
                    ..calm.clone()
                },
                route,
                factor,
            });
        }
        if self.factor >= 1.0 && self.route_factors.is_empty() {
            if self.newcomer_budget.take().is_some() {
                actions.push(Action::LiftNewcomers {
                    reason: Reason {
                        cohort: Cohort::Newcomers,
                        until: Until::Lifted,
                        ..calm
                    },
                });
            }
            self.state = State::Normal;
        }
    }

    /// Whether the monitor's [`Cohorts`](crate::Cohorts) learn who is established now: in the
    /// normal state, and while suspect on a healthy backend (the daily peak, a flash crowd that is
    /// only watched) all but persistent newcomers ([`Learning::Watchful`](crate::Learning)), never
    /// once anything is mitigated. Drivers pass this to
    /// [`Cohorts::set_learning`](crate::Cohorts::set_learning) after every tick.
    ///
    /// Why watchful rather than on while suspect: sources that flood a healthy backend for more
    /// than an epoch before it hurts (a slow ramp) were established by then, and only the global
    /// limit could meet them. The price: a legitimate client that starts sending every second
    /// while traffic is odd stays a newcomer until the traffic is normal again.
    pub fn learning(&self) -> crate::cohort::Learning {
        use crate::cohort::Learning;
        match self.state {
            State::Normal => Learning::On,
            State::Suspect if self.last_healthy && self.newcomer_budget.is_none() => {
                Learning::Watchful
            }
            _ => Learning::Off,
        }
    }

    /// The newcomers' budgets in force, if any: (newcomers, persistent newcomers) requests a tick.
    pub fn newcomer_budget(&self) -> Option<(u32, u32)> {
        self.newcomer_budget
    }

    fn expire_penalties(&mut self, actions: &mut Vec<Action>) {
        let now = self.tick;
        let expired: Vec<(Dimension, String)> = self
            .penalties
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for (dimension, key) in expired {
            self.penalties.remove(&(dimension, key.clone()));
            actions.push(Action::LiftKey {
                dimension,
                reason: Reason {
                    signal: Signal::Expired,
                    score: 0.0,
                    observed: 0.0,
                    baseline: 0.0,
                    key: Some(key.clone()),
                    ttl: None,
                    cohort: Cohort::Key {
                        dimension,
                        key: key.clone(),
                    },
                    until: Until::Lifted,
                },
                key,
            });
        }
    }

    fn judge_keys(&mut self, stats: &TickStats, actions: &mut Vec<Action>) {
        let ttl_ticks = (self.config.penalty_ttl.as_secs_f64() / self.config.tick.as_secs_f64())
            .ceil()
            .max(1.0) as u64;
        if self.tick <= self.config.detector.warmup_ticks {
            // Learn who is normally heavy before judging anyone.
            self.learn_keys(stats);
            return;
        }
        for &dimension in &self.config.key_dimensions {
            let keys = stats.dimension(dimension);
            let peer_rate = peer_rate(&keys.heavy);
            for hitter in &keys.heavy {
                let id = (dimension, hitter.key.clone());
                let rate = f64::from(hitter.count);
                let past = self.key_history.get(&id).filter(|h| h.seen() >= 10);
                let abusive = hitter.count >= self.config.key_min_requests
                    && rate >= self.config.key_peer_factor * peer_rate
                    && past.is_none_or(|p| rate >= self.config.key_baseline_factor * p.mean());
                let allowed = self.config.allow_list.contains(&hitter.key);
                if abusive && !allowed && !self.penalties.contains_key(&id) {
                    self.penalties.insert(id, self.tick + ttl_ticks);
                    actions.push(Action::PenalizeKey {
                        dimension,
                        key: hitter.key.clone(),
                        ttl: self.config.penalty_ttl,
                        reason: Reason {
                            signal: Signal::KeyRate,
                            score: rate / peer_rate,
                            observed: rate,
                            baseline: past.map_or(peer_rate, Ewma::mean),
                            key: Some(hitter.key.clone()),
                            ttl: Some(self.config.penalty_ttl),
                            cohort: Cohort::Key {
                                dimension,
                                key: hitter.key.clone(),
                            },
                            until: Until::Expires {
                                tick: self.tick + ttl_ticks,
                                ttl: self.config.penalty_ttl,
                            },
                        },
                    });
                }
            }
        }
        if self.state == State::Normal {
            self.learn_keys(stats);
        }
    }

    /// Folds the heavy hitters' rates into their histories (bounded: see [`remember`]).
    fn learn_keys(&mut self, stats: &TickStats) {
        for &dimension in &self.config.key_dimensions {
            for hitter in &stats.dimension(dimension).heavy {
                let id = (dimension, hitter.key.clone());
                if self.penalties.contains_key(&id) {
                    continue;
                }
                remember(&mut self.key_history, id, 60.0).update(f64::from(hitter.count));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CohortHealth;

    fn tick(requests: u64, p99_ms: u64, errors: u64) -> TickStats {
        sourced(requests, p99_ms, errors, 500.0 + (requests % 7) as f64)
    }

    fn sourced(requests: u64, p99_ms: u64, errors: u64, sources: f64) -> TickStats {
        let mut stats = TickStats {
            requests,
            responses: requests,
            server_errors: errors,
            latency_p99: Duration::from_millis(p99_ms),
            ..TickStats::default()
        };
        stats.dimensions[0].distinct = sources;
        stats
    }

    /// An attacker cycling thousands of fresh keys through the heavy hitters must not wipe the
    /// history of a key seen for a long time.
    #[test]
    fn churning_the_heavy_hitters_does_not_wipe_an_established_history() {
        use crate::sketch::HeavyHitter;
        let mut controller = Controller::new(ControllerConfig::default());
        let hitter = |key: String, count: u32| HeavyHitter {
            key,
            hash: 0,
            count,
        };
        for _ in 0..30 {
            let mut stats = tick(1000, 20, 0);
            stats.dimensions[0].heavy = vec![hitter("established".into(), 50)];
            controller.on_tick(&stats);
        }
        let id = (Dimension::Client, "established".to_string());
        assert!(
            controller
                .key_history
                .get(&id)
                .is_some_and(|h| h.seen() >= 30)
        );
        for round in 0..(KEY_HISTORY as u32 * 3 / 64) {
            let mut stats = tick(1000, 20, 0);
            stats.dimensions[0].heavy = (0..64)
                .map(|i| hitter(format!("churn-{round}-{i}"), 40))
                .collect();
            controller.on_tick(&stats);
        }
        assert!(controller.key_history.len() <= KEY_HISTORY);
        assert!(
            controller
                .key_history
                .get(&id)
                .is_some_and(|h| h.seen() >= 30),
            "the established key's history was wiped by churn"
        );
    }

    #[test]
    fn a_surge_on_one_route_tightens_that_route_not_the_global_limit() {
        use crate::sketch::HeavyHitter;
        let routed = |login: u32, p99: u64, errors: u64| {
            let mut stats = tick(u64::from(900 + login), p99, errors);
            stats.dimensions[2].heavy = vec![
                HeavyHitter {
                    key: "/login".into(),
                    hash: 1,
                    count: login,
                },
                HeavyHitter {
                    key: "/orders".into(),
                    hash: 2,
                    count: 900,
                },
            ];
            stats
        };
        let mut controller = Controller::new(ControllerConfig::default());
        for i in 0..300 {
            controller.on_tick(&routed(100 + (i % 7) as u32, 5, 0));
        }
        let mut actions = Vec::new();
        for _ in 0..10 {
            actions.extend(
                controller
                    .on_tick(&routed(5_000, 200, 500))
                    .into_iter()
                    .map(|d| d.action),
            );
        }
        assert!(
            actions
                .iter()
                .all(|a| !matches!(a, Action::ScaleGlobal { .. })),
            "{actions:?}"
        );
        let route_factors: Vec<f64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::ScaleRoute {
                    route,
                    factor,
                    reason,
                } if route == "/login" => {
                    assert_eq!(reason.signal, Signal::RouteRate);
                    Some(*factor)
                }
                _ => None,
            })
            .collect();
        assert_eq!(route_factors.first(), Some(&0.5), "{actions:?}");
        // Calm again: the route relaxes back to 1 and the controller to normal.
        for i in 0..100 {
            controller.on_tick(&routed(100 + (i % 7) as u32, 5, 0));
        }
        assert_eq!(controller.state(), State::Normal);
    }

    #[test]
    fn a_small_sustained_rise_is_caught_by_the_cusum() {
        let mut controller = warmed_up(ControllerConfig::default());
        // Two spreads up (the warm-up varied by about 20): too small for the detector, not for
        // the CUSUM.
        let mut state = State::Normal;
        for _ in 0..30 {
            controller.on_tick(&tick(1_075, 5, 0));
            state = controller.state();
        }
        assert_eq!(state, State::Suspect);
    }

    #[test]
    fn many_new_sources_at_a_steady_rate_are_the_distributed_flood_fingerprint() {
        let mut controller = warmed_up(ControllerConfig::default());
        let mut signals = Vec::new();
        for _ in 0..10 {
            for decided in controller.on_tick(&sourced(1_030, 50, 300, 20_000.0)) {
                if let Action::ScaleGlobal { reason, .. } = decided.action {
                    signals.push(reason.signal);
                }
            }
        }
        assert_eq!(controller.state(), State::Mitigating);
        assert_eq!(signals.first(), Some(&Signal::SourceSpread));
    }

    fn warmed_up(config: ControllerConfig) -> Controller {
        let mut controller = Controller::new(config);
        for i in 0..300 {
            controller.on_tick(&tick(1_000 + (i % 7) * 10, 5, 0));
        }
        assert_eq!(controller.state(), State::Normal);
        controller
    }

    /// The health gate is measured per cohort: a flood whose own requests are slow and failing
    /// (an expensive endpoint, a malformed payload) while the backend serves everyone else well
    /// is not a reason to act on anyone. Judged on the whole, it was.
    #[test]
    fn an_attackers_own_failing_requests_do_not_make_the_backend_look_unhealthy() {
        let mut controller = warmed_up(ControllerConfig::default());
        for _ in 0..30 {
            // Few established clients answer in this tick (under the minimum to judge on them
            // alone); the people arriving are served fast; the flood's persistent sources get
            // slow 5xx answers.
            let mut stats = sourced(20_000, 2_000, 9_000, 5_000.0);
            stats.newcomer_requests = 19_500;
            stats.persistent_requests = 19_000;
            stats.established_health = CohortHealth::uniform(20, 0, Duration::from_millis(5));
            stats.newcomer_health = CohortHealth::uniform(480, 0, Duration::from_millis(5));
            stats.persistent_health = CohortHealth::uniform(19_000, 9_000, Duration::from_secs(2));
            let actions = controller.on_tick(&stats);
            assert!(
                actions
                    .iter()
                    .all(|d| matches!(d.action, Action::PenalizeKey { .. })),
                "{actions:?}"
            );
        }
        assert_ne!(controller.state(), State::Mitigating);
    }

    /// Every client already here doubles its rate at once (a deploy made them faster) on a
    /// healthy backend: a new normal, which the baselines follow, so that the controller is
    /// normal again and can tell the next flood from it. It stayed suspect for ever before.
    #[test]
    fn a_lasting_rise_of_the_established_clients_on_a_healthy_backend_becomes_normal() {
        let mut controller = warmed_up(ControllerConfig::default());
        let mut states = Vec::new();
        for i in 0..600 {
            let actions = controller.on_tick(&tick(2_000 + (i % 7) * 20, 5, 0));
            assert!(actions.is_empty(), "{actions:?}");
            states.push(controller.state());
        }
        assert!(
            states[..50].contains(&State::Suspect),
            "the rise went unnoticed"
        );
        assert_eq!(controller.state(), State::Normal);
    }

    #[test]
    fn a_healthy_surge_is_watched_not_mitigated() {
        let mut controller = warmed_up(ControllerConfig::default());
        for _ in 0..50 {
            let actions = controller.on_tick(&tick(5_000, 5, 0));
            assert!(actions.is_empty(), "{actions:?}");
        }
        assert_eq!(controller.state(), State::Suspect);
    }

    #[test]
    fn tightening_stops_at_the_floor_and_relaxing_is_additive() {
        let config = ControllerConfig::default();
        let mut controller = warmed_up(config.clone());
        let mut factors = Vec::new();
        for _ in 0..60 {
            for decided in controller.on_tick(&tick(20_000, 200, 2_000)) {
                if let Action::ScaleGlobal { factor, reason } = decided.action {
                    assert_eq!(reason.signal, Signal::GlobalRate);
                    factors.push(factor);
                }
            }
        }
        assert_eq!(controller.state(), State::Mitigating);
        assert_eq!(
            factors,
            vec![0.5, 0.25, 0.125, 0.1],
            "multiplicative, down to the floor"
        );
        let mut relaxed = Vec::new();
        for _ in 0..60 {
            for decided in controller.on_tick(&tick(1_000, 5, 0)) {
                if let Action::ScaleGlobal { factor, .. } = decided.action {
                    relaxed.push(factor);
                }
            }
        }
        assert_eq!(controller.state(), State::Normal);
        assert_eq!(relaxed.len(), 9, "{relaxed:?}");
        for pair in relaxed.windows(2) {
            assert!((pair[1] - pair[0] - config.relax_step).abs() < 1e-9 || pair[1] == 1.0);
        }
        assert_eq!(controller.factor(), 1.0);
    }

    /// Whatever the traffic does after a flood (it stops dead, it falls to a trickle, it comes
    /// back at its usual level), a tightening relaxes once the traffic is calm.
    #[test]
    fn a_tightening_always_relaxes_once_traffic_is_calm() {
        for after in [0u64, 1, 50, 1_000] {
            let config = ControllerConfig::default();
            let mut controller = warmed_up(config.clone());
            for _ in 0..20 {
                controller.on_tick(&tick(20_000, 200, 2_000));
            }
            assert!(controller.factor() < 1.0, "the flood was not mitigated");
            let ticks = config.quiet_ticks as usize + 9 + 5;
            for _ in 0..ticks {
                controller.on_tick(&tick(after, 5, 0));
            }
            assert_eq!(
                controller.factor(),
                1.0,
                "still tightened {} ticks after the flood gave way to {after} requests a tick \
                 (state {:?})",
                ticks,
                controller.state()
            );
        }
    }

    /// Traffic that settles at a level above the baseline frozen when mitigation began (the day's
    /// peak after a night-time flood), on a healthy backend: the tightening must relax. The
    /// baseline does not learn while mitigating, so "elevated" alone can never end it.
    #[test]
    fn a_tightening_relaxes_on_a_healthy_backend_even_if_traffic_stays_above_the_old_baseline() {
        let config = ControllerConfig::default();
        let mut controller = warmed_up(config.clone());
        for _ in 0..20 {
            controller.on_tick(&tick(20_000, 200, 2_000));
        }
        assert!(controller.factor() < 1.0);
        for i in 0..(config.quiet_ticks + 9 + 5 + 60) {
            controller.on_tick(&tick(2_500 + u64::from(i % 7) * 10, 5, 0));
        }
        assert_eq!(controller.factor(), 1.0, "state {:?}", controller.state());
    }

    /// Traffic with a daily shape (a quiet night, a busy day from 08:00): once the seasonal
    /// baseline knows the day, the morning's rise is what this time of day brings, and a backend
    /// that is slow for a few minutes as it warms up is not met with a tightening. Against the
    /// flat baseline every morning looked like a tenfold flood.
    #[test]
    fn the_morning_rise_is_compared_with_the_seasonal_baseline() {
        let config = ControllerConfig {
            tick: Duration::from_secs(60),
            ..ControllerConfig::default()
        };
        let mut controller = Controller::new(config);
        let minute = 60;
        let mut tightened_on_day = Vec::new();
        for i in 0u32..(6 * 24 * 60) {
            let at = i64::from(i) * minute;
            let hour = (at % 86_400) / 3_600;
            let day = (8..20).contains(&hour);
            let requests = if day { 2_000 } else { 200 } + u64::from(i % 7) * 5;
            // The first ten minutes of each day the backend is slow, as caches warm.
            let warming = day && (at % 86_400) - 8 * 3_600 < 600;
            let mut stats = tick(requests, if warming { 200 } else { 5 }, 0);
            stats.at = Some(at);
            for decided in controller.on_tick(&stats) {
                if matches!(decided.action, Action::ScaleGlobal { factor, .. } if factor < 1.0) {
                    tightened_on_day.push(at / 86_400);
                }
            }
        }
        tightened_on_day.dedup();
        // The first days teach the season; from the fourth day on, mornings are expected.
        assert!(
            tightened_on_day.iter().all(|d| *d < 3),
            "tightened on days {tightened_on_day:?}"
        );
    }
}
