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

mod action;
mod config;
mod keys;
mod mitigation;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::baseline::Ewma;
use crate::detector::{DetectorConfig, RateDetector};
use crate::monitor::{Dimension, TickStats};

pub use action::{Action, Cohort, Decided, Reason, Signal, State, Until};
pub use config::ControllerConfig;
use keys::remember;

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

/// Responses of a cohort in a tick needed to judge the backend's health on that cohort.
const COHORT_HEALTH_MIN: u64 = 50;

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
            Reason::everyone(Signal::GlobalRate, score, requests, expected, calm)
        } else if spread {
            Reason::everyone(
                Signal::SourceSpread,
                score,
                distinct,
                self.sources.mean(),
                calm,
            )
        } else if unusual {
            Reason::everyone(
                Signal::Multivariate,
                forest_score,
                requests,
                self.traffic.mean(),
                calm,
            )
        } else if shifted {
            Reason::everyone(
                Signal::SustainedShift,
                self.cusum,
                requests,
                self.traffic.mean(),
                calm,
            )
        } else {
            Reason::everyone(
                Signal::MinuteRate,
                self.minute_score,
                requests,
                self.traffic.mean(),
                calm,
            )
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
}
