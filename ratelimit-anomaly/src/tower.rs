//! Wiring into ratelimit-tower: an observer that feeds the [`Monitor`] from the layer's decisions,
//! and an actuator that applies actions through the layer's [`RateLimitHandle`]. The tick task that
//! runs the [`Controller`](crate::Controller) between them is [`spawn`] (from [`tick`](crate::tick), re-exported here).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratelimit_core::Policy;
use ratelimit_tower::{
    ControlError, DecisionEvent, DecisionObserver, KeyExtractor, MissingKey, Outcome,
    RateLimitHandle, ResponseEvent, Rule, TrustedProxies,
};

use crate::actuator::{Actuator, scaled};
use crate::controller::Action;
use crate::monitor::{Dimension, Monitor, RequestEvent, Standing};

pub use crate::tick::{AnomalyTask, Explained, Status, spawn};

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

/// The switch of the newcomer rules ([`newcomer_rules`]): off, the rules let every request
/// through without a look; on, clients that are not established share the rules' buckets.
#[derive(Clone)]
pub struct NewcomerGate {
    // Relaxed: a request that races the switch is decided as if a moment earlier or later.
    active: Arc<AtomicBool>,
}

/// Two rules that hold every client the monitor does not know as established to shared budgets
/// while the controller asks for it ([`Action::LimitNewcomers`]), and do nothing otherwise:
/// `name` for newcomers, `persistent_name` for persistent newcomers (sources active in many ticks
/// of one session, [`Persistence`](crate::Persistence)), so that a flood of machines cannot spend
/// the budget of people arriving with it. Clients are keyed as `trusted` keys them, which must be
/// how the observed rule keys them, so that the monitor's cohorts and these rules agree on who is
/// who. Add both rules to the layer and the gate to the actuator
/// ([`TowerActuator::with_newcomer_rules`]).
pub fn newcomer_rules(
    monitor: Arc<Monitor>,
    trusted: TrustedProxies,
    name: &str,
    persistent_name: &str,
) -> Result<(Rule, Rule, NewcomerGate), ratelimit_core::PolicyError> {
    let gate = NewcomerGate {
        active: Arc::new(AtomicBool::new(false)),
    };
    let rule = |wanted: Standing, name: &str| -> Result<Rule, ratelimit_core::PolicyError> {
        let (active, monitor, trusted) = (gate.active.clone(), monitor.clone(), trusted.clone());
        let extractor = KeyExtractor::custom(move |request| {
            if !active.load(Ordering::Relaxed) {
                return None;
            }
            let client = trusted.client_key(request).ok()?;
            (monitor.standing(&client) == wanted).then(|| "newcomers".to_string())
        });
        Ok(Rule::new(name, extractor, Policy::per_second(1)?).on_missing_key(MissingKey::Skip))
    };
    Ok((
        rule(Standing::Newcomer, name)?,
        rule(Standing::Persistent, persistent_name)?,
        gate,
    ))
}

/// Applies actions through a layer's handle: a key's penalty blocks it for its time to live, and
/// the global factor scales one rule's policy (from the one it had when the actuator was made).
pub struct TowerActuator {
    handle: RateLimitHandle,
    rule: String,
    base: Policy,
    // route -> (rule, its policy when mapped)
    routes: Vec<(String, String, Policy)>,
    // (newcomers' rule, persistent newcomers' rule, their switch, the tick)
    newcomers: Option<(String, String, NewcomerGate, Duration)>,
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

    /// The same actuator setting the newcomer rules `rule` and `persistent_rule` (made by
    /// [`newcomer_rules`], switched by `gate`) to the controller's budgets per `tick`.
    pub fn with_newcomer_rules(
        mut self,
        rule: &str,
        persistent_rule: &str,
        gate: NewcomerGate,
        tick: Duration,
    ) -> Result<Self, ControlError> {
        self.handle.policy(rule)?;
        self.handle.policy(persistent_rule)?;
        self.newcomers = Some((rule.to_string(), persistent_rule.to_string(), gate, tick));
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
            Action::LimitNewcomers {
                per_tick,
                persistent_per_tick,
                ..
            } => {
                let Some((rule, persistent_rule, gate, tick)) = &self.newcomers else {
                    return;
                };
                // The whole budget may be spent at once: a tick's worth is the burst.
                let budget = |per_tick: u32| {
                    Policy::new(per_tick.max(1), *tick).and_then(|p| p.with_burst(per_tick.max(1)))
                };
                let mut set = true;
                for (rule, per_tick) in [(rule, *per_tick), (persistent_rule, *persistent_per_tick)]
                {
                    let result = budget(per_tick)
                        .map_err(|e| e.to_string())
                        .and_then(|p| self.handle.set_policy(rule, p).map_err(|e| e.to_string()));
                    if let Err(error) = result {
                        tracing::error!(%error, %rule, "could not set the newcomers' budget");
                        set = false;
                    }
                }
                if set {
                    gate.active.store(true, Ordering::Relaxed);
                }
            }
            Action::LiftNewcomers { .. } => {
                if let Some((_, _, gate, _)) = &self.newcomers {
                    gate.active.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}
