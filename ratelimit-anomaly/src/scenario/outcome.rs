//! What a scenario's run measured: tick by tick, and its shares, times and precision in all.

use crate::controller::State;

/// What the simulation saw at one tick: for tables and plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRecord {
    /// The tick.
    pub tick: u32,
    /// Legitimate requests sent.
    pub legitimate: u32,
    /// Attack requests sent.
    pub attack: u32,
    /// Requests admitted.
    pub admitted: u32,
    /// Legitimate requests limited.
    pub legitimate_limited: u32,
    /// The global limit in force.
    pub effective_limit: u32,
    /// The detector's score.
    pub score: f64,
    /// The controller's state.
    pub state: State,
    /// Actions taken this tick.
    pub actions: usize,
}

/// Shares of legitimate requests limited, split by who sent them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CohortShares {
    /// Clients that were already there: seen before the attack in two epochs apart of the monitor's
    /// cohorts (the ground truth, kept apart from the monitor's own sets).
    pub established: f64,
    /// Every other legitimate client (first seen recently, or during the attack), the flash
    /// crowd's people included.
    pub newcomers: f64,
    /// The flash crowd's people alone (0 without a crowd).
    pub crowd: f64,
}

/// How a scenario went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The scenario.
    pub name: &'static str,
    /// Ticks from the attack's start to the first action (key penalty or global tightening).
    pub time_to_detect: Option<u32>,
    /// Ticks from the attack's start to the first mitigation: the newcomers' budget or a global
    /// tightening.
    pub time_to_mitigate: Option<u32>,
    /// Ticks from the attack's start to the first global tightening.
    pub time_to_tighten_global: Option<u32>,
    /// Share of attack requests limited over the whole attack.
    pub attack_limited: f64,
    /// Share of attack requests limited from ten ticks into the attack to its end.
    pub attack_limited_after_10: f64,
    /// Legitimate requests limited before the attack, by cohort.
    pub before: CohortShares,
    /// ... while it ran.
    pub during: CohortShares,
    /// ... from ten ticks into the attack to its end (once mitigation has had time to act).
    pub during_after_10: CohortShares,
    /// ... after it.
    pub after: CohortShares,
    /// Of the keys penalised, the share that were attack sources.
    pub precision: f64,
    /// Of the attack sources, the share penalised.
    pub recall: f64,
    /// Share of legitimate requests limited over the whole run.
    pub legitimate_limited: f64,
    /// Share of legitimate requests limited while the attack ran.
    pub legitimate_limited_during: f64,
    /// Ticks from the attack's end until every mitigation was lifted (None: never mitigated or
    /// never lifted).
    pub time_to_relax: Option<u32>,
    /// Whether anything was mitigated (a newcomers' budget or the global limit).
    pub mitigated: bool,
    /// Tick by tick.
    pub ticks: Vec<TickRecord>,
}
