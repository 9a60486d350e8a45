//! Wiring into ratelimit-tower: an observer that feeds the [`Monitor`] from the layer's decisions,
//! an actuator that applies actions through the layer's [`RateLimitHandle`], and the tick task
//! that runs the [`Controller`] between them.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ratelimit_core::Policy;
use ratelimit_tower::{
    ControlError, DecisionEvent, DecisionObserver, Outcome, RateLimitHandle, ResponseEvent,
};

use crate::actuator::{Actuator, scaled};
use crate::controller::{Action, Controller, Decided, State};
use crate::monitor::{Dimension, Monitor, RequestEvent};

/// Feeds a [`Monitor`] from one rule of a [`RateLimitLayer`](ratelimit_tower::RateLimitLayer).
///
/// Record one rule that every request passes (a per-client or global rule), so each request is
/// counted once; that rule's key is recorded under `dimension`, and the client's address as the
/// client.
pub struct TowerObserver {
    monitor: Arc<Monitor>,
    rule: String,
    dimension: Dimension,
}

impl TowerObserver {
    /// An observer of `rule`'s decisions, whose keys belong to `dimension`.
    pub fn new(monitor: Arc<Monitor>, rule: &str, dimension: Dimension) -> Self {
        TowerObserver {
            monitor,
            rule: rule.to_string(),
            dimension,
        }
    }
}

/// An address as text on the stack: the hot path does not allocate.
struct AddressText {
    buffer: [u8; 48],
    len: usize,
}

impl std::fmt::Write for AddressText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buffer.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl AddressText {
    fn of(address: IpAddr) -> Self {
        let mut text = AddressText {
            buffer: [0; 48],
            len: 0,
        };
        // An IPv6 address is at most 45 characters: this cannot fail.
        let _ = write!(text, "{address}");
        text
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buffer[..self.len]).unwrap_or("")
    }
}

impl DecisionObserver for TowerObserver {
    fn on_decision(&self, event: &DecisionEvent<'_>) {
        if event.rule != self.rule {
            return;
        }
        let address = event.client.map(AddressText::of);
        let client = address.as_ref().map(AddressText::as_str);
        let key = Some(event.key);
        let mut request = RequestEvent {
            client,
            api_key: None,
            route: Some(event.route),
            limited: matches!(event.outcome, Outcome::Limited | Outcome::Blocked),
        };
        match self.dimension {
            Dimension::Client => request.client = key.or(client),
            Dimension::ApiKey => request.api_key = key,
            Dimension::Route => request.route = key,
        }
        self.monitor.request_started();
        self.monitor.record(&request);
    }

    fn on_response(&self, event: &ResponseEvent<'_>) {
        self.monitor.record_response(event.status, event.latency);
    }
}

/// Applies actions through a layer's handle: a key's penalty blocks it for its time to live, and
/// the global factor scales one rule's policy (from the one it had when the actuator was made).
pub struct TowerActuator {
    handle: RateLimitHandle,
    rule: String,
    base: Policy,
    // route -> (rule, its policy when mapped)
    routes: Vec<(String, String, Policy)>,
}

impl TowerActuator {
    /// An actuator scaling `rule` of the layer behind `handle`.
    pub fn new(handle: RateLimitHandle, rule: &str) -> Result<Self, ControlError> {
        Ok(TowerActuator {
            base: handle.policy(rule)?,
            rule: rule.to_string(),
            handle,
            routes: Vec::new(),
        })
    }

    /// The same actuator scaling `rule` when the controller tightens `route` (the route as the
    /// observer records it, the request path). Routes without a rule are not acted on.
    pub fn with_route_rule(mut self, route: &str, rule: &str) -> Result<Self, ControlError> {
        let base = self.handle.policy(rule)?;
        self.routes
            .push((route.to_string(), rule.to_string(), base));
        Ok(self)
    }
}

impl Actuator for TowerActuator {
    fn apply(&self, action: &Action) {
        match action {
            Action::PenalizeKey { key, ttl, .. } => self.handle.block(key, *ttl),
            Action::LiftKey { key, .. } => self.handle.unblock(key),
            Action::ScaleRoute { route, factor, .. } => {
                for (_, rule, base) in self.routes.iter().filter(|(r, _, _)| r == route) {
                    if let Err(error) = self.handle.set_policy(rule, scaled(*base, *factor)) {
                        tracing::error!(%error, %rule, "could not scale the route's rule");
                    }
                }
            }
            Action::ScaleGlobal { factor, .. } => {
                if let Err(error) = self
                    .handle
                    .set_policy(&self.rule, scaled(self.base, *factor))
                {
                    tracing::error!(%error, rule = %self.rule, "could not scale the rule");
                }
            }
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
    /// The last actions decided, newest last (at most 64).
    pub recent: Vec<Decided>,
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
    task: tokio::task::JoinHandle<()>,
}

impl AnomalyTask {
    /// The controller's status now.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
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
/// logging each with its reason. Stops when the returned task is dropped.
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
        recent: Vec::new(),
        requests: 0,
        limited: 0,
        top_clients: Vec::new(),
    }));
    let shared = status.clone();
    let task = tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let stats = monitor.tick();
            let decided = controller.on_tick(&stats);
            for d in &decided {
                tracing::warn!(applied = d.apply, action = ?d.action, "anomaly action");
            }
            actuator.apply_all(&decided);
            let mut status = shared.lock();
            status.state = controller.state();
            status.factor = controller.factor();
            status.score = controller.last_score();
            status.recent.extend(decided);
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
    AnomalyTask { status, task }
}
