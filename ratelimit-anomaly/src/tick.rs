//! The tick task: runs the [`Controller`] on what the [`Monitor`] saw, once a tick, on tokio, and
//! applies its actions with any [`Actuator`]. It needs no HTTP stack: the `tower` module's
//! actuator (feature `tower`) is one actuator among others.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::actuator::Actuator;
use crate::controller::{Controller, Decided, State};
use crate::monitor::{Dimension, Monitor};

/// One decided action with its explanation, as the status page and the decision stream carry it.
#[derive(Debug, Clone)]
pub struct Explained {
    /// When it was decided (wall clock).
    pub at: std::time::SystemTime,
    /// The action, its reason (cohort, signal, evidence, until when) and whether it was applied.
    pub decided: Decided,
    /// The whole explanation on one line ([`Decided::explain`]).
    pub text: String,
}

impl Explained {
    /// When it stops holding, for actions that expire (a key's penalty): `at` plus the time to live.
    pub fn until(&self) -> Option<std::time::SystemTime> {
        match self.decided.action.reason().until {
            crate::controller::Until::Expires { ttl, .. } => Some(self.at + ttl),
            _ => None,
        }
    }
}

/// What the running controller shows: its state, the global factor, and recent actions.
#[derive(Debug, Clone)]
pub struct Status {
    /// The controller's state.
    pub state: State,
    /// The global factor.
    pub factor: f64,
    /// The detector's last score.
    pub score: f64,
    /// The newcomers' budgets in force (newcomers, persistent newcomers), requests a tick.
    pub newcomer_budget: Option<(u32, u32)>,
    /// The last actions decided, explained, newest last (at most 64).
    pub recent: Vec<Explained>,
    /// Ticks run so far.
    pub ticks: u64,
    /// Requests seen in the last tick.
    pub requests: u64,
    /// Requests limited in the last tick.
    pub limited: u64,
    /// The heaviest clients of the last tick, with their request counts.
    pub top_clients: Vec<(String, u32)>,
}

/// The tick task: see [`spawn`].
pub struct AnomalyTask {
    status: Arc<Mutex<Status>>,
    decisions: tokio::sync::broadcast::Sender<Explained>,
    task: tokio::task::JoinHandle<()>,
}

impl AnomalyTask {
    /// The controller's status now.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// The decision stream: every action from now on, explained, as it is decided. A receiver
    /// that falls more than 256 decisions behind loses the oldest (and is told so), so a slow
    /// reader never holds up the controller.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Explained> {
        self.decisions.subscribe()
    }

    /// Stops the task.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for AnomalyTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `controller` every `tick` on what `monitor` saw, applying its actions with `actuator` and
/// logging each with its explanation. Stops when the returned task is dropped.
pub fn spawn<A: Actuator + 'static>(
    monitor: Arc<Monitor>,
    mut controller: Controller,
    actuator: A,
    tick: Duration,
) -> AnomalyTask {
    let status = Arc::new(Mutex::new(Status {
        state: State::Normal,
        factor: 1.0,
        score: 0.0,
        newcomer_budget: None,
        recent: Vec::new(),
        ticks: 0,
        requests: 0,
        limited: 0,
        top_clients: Vec::new(),
    }));
    let (decisions, _) = tokio::sync::broadcast::channel(256);
    let (shared, stream) = (status.clone(), decisions.clone());
    let task = tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let stats = monitor.tick();
            let decided = controller.on_tick(&stats);
            monitor.cohorts().set_learning(controller.learning());
            actuator.apply_all(&decided);
            let at = std::time::SystemTime::now();
            let explained: Vec<Explained> = decided
                .into_iter()
                .map(|decided| Explained {
                    at,
                    text: decided.explain(tick),
                    decided,
                })
                .collect();
            for e in &explained {
                tracing::warn!(applied = e.decided.apply, "anomaly action: {}", e.text);
                // No receivers is not an error: nobody is listening now.
                let _ = stream.send(e.clone());
            }
            let mut status = shared.lock();
            status.state = controller.state();
            status.factor = controller.factor();
            status.score = controller.last_score();
            status.newcomer_budget = controller.newcomer_budget();
            status.recent.extend(explained);
            status.ticks += 1;
            status.requests = stats.requests;
            status.limited = stats.limited;
            status.top_clients = stats
                .dimension(Dimension::Client)
                .heavy
                .iter()
                .take(10)
                .map(|h| (h.key.clone(), h.count))
                .collect();
            let excess = status.recent.len().saturating_sub(64);
            status.recent.drain(..excess);
        }
    });
    AnomalyTask {
        status,
        decisions,
        task,
    }
}
