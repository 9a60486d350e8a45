//! Wiring into ratelimit-tower: an observer that feeds the [`Monitor`] from the layer's decisions,
//! an actuator that applies actions through the layer's [`RateLimitHandle`], and the tick task
//! that runs the [`Controller`] between them.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use ratelimit_core::Policy;
use ratelimit_tower::{
    ControlError, DecisionEvent, DecisionObserver, KeyExtractor, MissingKey, Outcome,
    RateLimitHandle, ResponseEvent, Rule, TrustedProxies,
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
        // The address as text: the observed rule's key for IPv4 clients (IPv6 clients keyed by
        // network are then not counted in the established clients' health, only in the whole's).
        let address = event.client.map(AddressText::of);
        let client = address.as_ref().map(AddressText::as_str);
        self.monitor
            .record_response_of(client, event.status, event.latency);
    }
}

/// The switch of a newcomer rule ([`newcomer_rule`]): off, the rule lets every request through
/// without a look; on, clients that are not established share the rule's one bucket.
#[derive(Clone)]
pub struct NewcomerGate {
    // Relaxed: a request that races the switch is decided as if a moment earlier or later.
    active: Arc<AtomicBool>,
}

/// A rule that holds every client the monitor does not know as established to one shared budget
/// while the controller asks for it ([`Action::LimitNewcomers`]), and does nothing otherwise.
/// Clients are keyed as `trusted` keys them, which must be how the observed rule keys them, so
/// that the monitor's cohorts and this rule agree on who is who. Add the rule to the layer and
/// the gate to the actuator ([`TowerActuator::with_newcomer_rule`]).
pub fn newcomer_rule(
    monitor: Arc<Monitor>,
    trusted: TrustedProxies,
    name: &str,
) -> Result<(Rule, NewcomerGate), ratelimit_core::PolicyError> {
    let gate = NewcomerGate {
        active: Arc::new(AtomicBool::new(false)),
    };
    let active = gate.active.clone();
    let extractor = KeyExtractor::custom(move |request| {
        if !active.load(Ordering::Relaxed) {
            return None;
        }
        let client = trusted.client_key(request).ok()?;
        (!monitor.is_established(&client)).then(|| "newcomers".to_string())
    });
    let rule = Rule::new(name, extractor, Policy::per_second(1)?).on_missing_key(MissingKey::Skip);
    Ok((rule, gate))
}

/// Applies actions through a layer's handle: a key's penalty blocks it for its time to live, and
/// the global factor scales one rule's policy (from the one it had when the actuator was made).
pub struct TowerActuator {
    handle: RateLimitHandle,
    rule: String,
    base: Policy,
    // route -> (rule, its policy when mapped)
    routes: Vec<(String, String, Policy)>,
    newcomers: Option<(String, NewcomerGate, Duration)>,
}

impl TowerActuator {
    /// An actuator scaling `rule` of the layer behind `handle`.
    pub fn new(handle: RateLimitHandle, rule: &str) -> Result<Self, ControlError> {
        Ok(TowerActuator {
            base: handle.policy(rule)?,
            rule: rule.to_string(),
            handle,
            routes: Vec::new(),
            newcomers: None,
        })
    }

    /// The same actuator setting the newcomer rule `rule` (made by [`newcomer_rule`], switched by
    /// `gate`) to the controller's budget per `tick`.
    pub fn with_newcomer_rule(
        mut self,
        rule: &str,
        gate: NewcomerGate,
        tick: Duration,
    ) -> Result<Self, ControlError> {
        self.handle.policy(rule)?;
        self.newcomers = Some((rule.to_string(), gate, tick));
        Ok(self)
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
            Action::LimitNewcomers { per_tick, .. } => {
                let Some((rule, gate, tick)) = &self.newcomers else {
                    return;
                };
                // The whole budget may be spent at once: a tick's worth is the burst.
                let policy = Policy::new((*per_tick).max(1), *tick);
                match policy.and_then(|p| p.with_burst((*per_tick).max(1))) {
                    Ok(policy) => match self.handle.set_policy(rule, policy) {
                        Ok(()) => gate.active.store(true, Ordering::Relaxed),
                        Err(error) => tracing::error!(%error, %rule, "could not set the budget"),
                    },
                    Err(error) => tracing::error!(%error, %rule, "newcomer budget"),
                }
            }
            Action::LiftNewcomers { .. } => {
                if let Some((_, gate, _)) = &self.newcomers {
                    gate.active.store(false, Ordering::Relaxed);
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
            monitor.cohorts().set_learning(controller.learning());
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
