//! The anomaly controller as the page shows it: its state, the actions in force with their
//! reasons and time left, and the recent explanations.
//!
//! Apart because "in force" is worked out here: the controller keeps its last actions as a log
//! (tightenings, relaxations and lifts alike), and the page wants what holds now.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use ratelimit_anomaly::Action;
use ratelimit_anomaly::tower::{Explained, Status};
use serde::Serialize;

use super::history::unix_seconds;

/// The controller, for the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyView {
    /// `Normal`, `Suspect`, `Mitigating` or `Recovering`.
    pub state: String,
    /// The global limit's multiple now (1: as configured).
    pub factor: f64,
    /// The detector's last score.
    pub score: f64,
    /// Ticks run so far.
    pub ticks: u64,
    /// The length of a tick, in seconds.
    pub tick_seconds: f64,
    /// Requests seen in the last tick.
    pub requests_last_tick: u64,
    /// Requests limited in the last tick.
    pub limited_last_tick: u64,
    /// The newcomers' budgets in force, requests a tick: `[newcomers, persistent newcomers]`.
    pub newcomer_budget: Option<[u32; 2]>,
    /// The heaviest clients of the last tick, with their requests.
    pub top_clients: Vec<(String, u32)>,
    /// The actions in force now, the newest first.
    pub active: Vec<ActiveAction>,
    /// The last actions decided, explained, the newest first.
    pub recent: Vec<RecentAction>,
}

/// An action in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAction {
    /// What is done, in words.
    pub action: String,
    /// Whom it is aimed at.
    pub cohort: String,
    /// The signal that led to it.
    pub signal: String,
    /// What was observed against what was expected.
    pub evidence: String,
    /// Whether it was applied (false: shadow mode, reported only).
    pub applied: bool,
    /// When it was decided, in seconds since the Unix epoch.
    pub decided_at: f64,
    /// Until when it holds, in words.
    pub until: String,
    /// Seconds left, for an action that expires at a known time (a key's penalty).
    pub seconds_left: Option<f64>,
    /// The controller's whole explanation.
    pub explanation: String,
}

/// One decided action, explained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentAction {
    /// When it was decided, in seconds since the Unix epoch.
    pub at: f64,
    /// Whether it was applied.
    pub applied: bool,
    /// The controller's explanation: cohort, signal, evidence, action, until when.
    pub text: String,
}

/// Which actions hold: the last word on each thing an action can touch.
#[derive(Default)]
struct InForce<'a> {
    keys: HashMap<String, &'a Explained>,
    routes: HashMap<String, &'a Explained>,
    newcomers: Option<&'a Explained>,
    global: Option<&'a Explained>,
}

impl<'a> InForce<'a> {
    /// Replays the log, oldest first: each action replaces or lifts what was before it.
    fn replay(recent: &'a [Explained]) -> Self {
        let mut state = InForce::default();
        for explained in recent {
            match &explained.decided.action {
                Action::PenalizeKey { key, .. } => {
                    state.keys.insert(key.clone(), explained);
                }
                Action::LiftKey { key, .. } => {
                    state.keys.remove(key);
                }
                Action::ScaleRoute { route, factor, .. } if *factor < 1.0 => {
                    state.routes.insert(route.clone(), explained);
                }
                Action::ScaleRoute { route, .. } => {
                    state.routes.remove(route);
                }
                Action::LimitNewcomers { .. } => state.newcomers = Some(explained),
                Action::LiftNewcomers { .. } => state.newcomers = None,
                Action::ScaleGlobal { factor, .. } if *factor < 1.0 => {
                    state.global = Some(explained);
                }
                Action::ScaleGlobal { .. } => state.global = None,
            }
        }
        state
    }
}

fn active(explained: &Explained, now: SystemTime, tick: Duration) -> ActiveAction {
    let action = &explained.decided.action;
    let reason = action.reason();
    let expires = explained.until();
    ActiveAction {
        action: action.what(),
        cohort: reason.cohort.to_string(),
        signal: format!("{:?}", reason.signal),
        evidence: format!(
            "observed {:.0} against {:.1} (score {:.2})",
            reason.observed, reason.baseline, reason.score
        ),
        applied: explained.decided.apply,
        decided_at: unix_seconds(explained.at),
        // In words ("for 60s", "until the traffic is calm ..."); the time left is apart.
        until: reason.until.describe(tick),
        seconds_left: expires.map(|at| {
            at.duration_since(now)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        }),
        explanation: explained.text.clone(),
    }
}

impl AnomalyView {
    /// The view of the controller's `status` at `now`, its tick being `tick` long.
    pub fn of(status: &Status, tick: Duration, now: SystemTime) -> Self {
        let in_force = InForce::replay(&status.recent);
        let mut held: Vec<&Explained> = in_force
            .keys
            .values()
            .copied()
            // A penalty past its time is lifted on the controller's next tick: not in force.
            .filter(|e| e.until().is_none_or(|at| at > now))
            .chain(in_force.routes.values().copied())
            // The controller's own state has the last word on what it still holds.
            .chain(
                in_force
                    .newcomers
                    .filter(|_| status.newcomer_budget.is_some()),
            )
            .chain(in_force.global.filter(|_| status.factor < 1.0))
            .collect();
        held.sort_by(|a, b| b.at.cmp(&a.at).then(b.decided.tick.cmp(&a.decided.tick)));
        AnomalyView {
            state: format!("{:?}", status.state),
            factor: status.factor,
            score: status.score,
            ticks: status.ticks,
            tick_seconds: tick.as_secs_f64(),
            requests_last_tick: status.requests,
            limited_last_tick: status.limited,
            newcomer_budget: status.newcomer_budget.map(|(a, b)| [a, b]),
            top_clients: status.top_clients.clone(),
            active: held.into_iter().map(|e| active(e, now, tick)).collect(),
            recent: status
                .recent
                .iter()
                .rev()
                .map(|e| RecentAction {
                    at: unix_seconds(e.at),
                    applied: e.decided.apply,
                    text: e.text.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ratelimit_anomaly::{Cohort, Decided, Dimension, Reason, Signal, State, Until};

    use super::*;

    fn reason(signal: Signal, cohort: Cohort, until: Until) -> Reason {
        Reason {
            signal,
            score: 40.0,
            observed: 120.0,
            baseline: 3.0,
            key: None,
            ttl: None,
            cohort,
            until,
        }
    }

    fn explained(at: SystemTime, tick: u64, action: Action) -> Explained {
        let decided = Decided {
            action,
            apply: true,
            tick,
        };
        Explained {
            at,
            text: decided.explain(Duration::from_secs(1)),
            decided,
        }
    }

    fn status(recent: Vec<Explained>, budget: Option<(u32, u32)>, factor: f64) -> Status {
        Status {
            state: State::Mitigating,
            factor,
            score: 0.5,
            newcomer_budget: budget,
            recent,
            ticks: 10,
            requests: 100,
            limited: 5,
            top_clients: vec![("10.0.0.9".into(), 80)],
        }
    }

    fn penalty(key: &str, ttl: Duration) -> Action {
        let cohort = Cohort::Key {
            dimension: Dimension::Client,
            key: key.into(),
        };
        Action::PenalizeKey {
            dimension: Dimension::Client,
            key: key.into(),
            ttl,
            reason: reason(Signal::KeyRate, cohort, Until::Expires { tick: 70, ttl }),
        }
    }

    #[test]
    fn a_penalty_holds_with_its_time_left_until_lifted() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ttl = Duration::from_secs(60);
        let log = vec![explained(start, 10, penalty("10.0.0.9", ttl))];
        let view = AnomalyView::of(
            &status(log.clone(), None, 1.0),
            Duration::from_secs(1),
            start + Duration::from_secs(15),
        );
        assert_eq!(view.active.len(), 1);
        let action = &view.active[0];
        assert_eq!(action.signal, "KeyRate");
        assert_eq!(action.seconds_left, Some(45.0));
        assert!(action.action.contains("10.0.0.9"), "{action:?}");
        assert_eq!(view.recent.len(), 1);

        // Past its time it no longer holds, though the lift is not in the log yet.
        let late = AnomalyView::of(
            &status(log.clone(), None, 1.0),
            Duration::from_secs(1),
            start + Duration::from_secs(61),
        );
        assert!(late.active.is_empty());

        // Lifted: no longer in force, both still explained.
        let mut lifted = log;
        lifted.push(explained(
            start + Duration::from_secs(20),
            30,
            Action::LiftKey {
                dimension: Dimension::Client,
                key: "10.0.0.9".into(),
                reason: reason(Signal::Expired, Cohort::Everyone, Until::Lifted),
            },
        ));
        let view = AnomalyView::of(
            &status(lifted, None, 1.0),
            Duration::from_secs(1),
            start + Duration::from_secs(21),
        );
        assert!(view.active.is_empty());
        assert_eq!(view.recent.len(), 2);
        assert!(view.recent[0].text.contains("unblocked"), "newest first");
    }

    #[test]
    fn the_newcomers_budget_and_the_global_cut_hold_while_the_controller_says_so() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let calm = Until::Calm { quiet_ticks: 30 };
        let log = vec![
            explained(
                at,
                5,
                Action::LimitNewcomers {
                    per_tick: 10,
                    persistent_per_tick: 2,
                    reason: reason(Signal::NewcomerSurge, Cohort::Newcomers, calm),
                },
            ),
            explained(
                at,
                6,
                Action::ScaleGlobal {
                    factor: 0.5,
                    reason: reason(Signal::GlobalRate, Cohort::Everyone, calm),
                },
            ),
        ];
        let tick = Duration::from_secs(1);
        let held = AnomalyView::of(&status(log.clone(), Some((10, 2)), 0.5), tick, at);
        assert_eq!(held.active.len(), 2);
        assert_eq!(held.active[0].signal, "GlobalRate", "newest first");
        assert!(
            held.active[1].until.contains("until"),
            "{:?}",
            held.active[1]
        );
        assert_eq!(held.active[1].seconds_left, None);
        let relaxed = AnomalyView::of(&status(log, None, 1.0), tick, at);
        assert!(relaxed.active.is_empty());
    }
}
