//! What the controller decides and why: its states, the signals, the cohorts acted on, the
//! actions and their explanations (for logs, the status page and the decision stream).

use std::time::Duration;

use crate::monitor::Dimension;

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

impl Reason {
    /// A reason for acting on everyone (the global limit): no key, no expiry of its own.
    pub fn everyone(
        signal: Signal,
        score: f64,
        observed: f64,
        baseline: f64,
        until: Until,
    ) -> Self {
        Reason {
            signal,
            score,
            observed,
            baseline,
            key: None,
            ttl: None,
            cohort: Cohort::Everyone,
            until,
        }
    }
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
