//! Wiring into ratelimit-tower: an observer that feeds the [`Monitor`] from the layer's decisions,
//! and an actuator that applies actions through the layer's [`RateLimitHandle`]. The tick task that
//! runs the [`Controller`](crate::Controller) between them is [`spawn`] (from [`tick`](crate::tick), re-exported here).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratelimit_core::Policy;
use ratelimit_core::key::AddressText;
use ratelimit_tower::{
    ControlError, CustomExtractor, DecisionEvent, DecisionObserver, IpPrefixes, KeyExtractor,
    Matcher, MissingKey, Outcome, RateLimitHandle, ResponseEvent, Rule, TrustedProxies,
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

impl DecisionObserver for TowerObserver {
    fn on_decision(&self, event: &DecisionEvent<'_>) {
        if event.rule != self.rule {
            return;
        }
        // Observing clients, the rule's key is the client: the address is not written out.
        let address = match self.dimension {
            Dimension::Client => None,
            Dimension::ApiKey | Dimension::Route => event.client.map(AddressText::of),
        };
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

/// The newcomers' budgets a network of newcomers may spend at most one share of: a /24 or a /48
/// (or the clients' own prefixes, when coarser) can take a quarter of the newcomers' requests a
/// tick, and no more.
///
/// Without it, one attacker who owns a network (any IPv6 customer has a /48: 65,536 /64 clients,
/// each new, none ever persistent) can rotate its sources through it faster than any source turns
/// persistent and spend the whole newcomers' budget, so that nobody arriving from anywhere else
/// gets in while the flood lasts.
pub const NETWORK_SHARE_DIVISOR: u32 = 4;

/// The prefixes newcomers are grouped into networks by: /24 for IPv4, /48 for IPv6.
pub const NEWCOMER_NETWORK_PREFIXES: (u8, u8) = (24, 48);

/// The switch of the newcomer rules ([`newcomer_rules`]): off, the rules let every request
/// through without a look; on, clients that are not established share the rules' buckets.
#[derive(Clone)]
pub struct NewcomerGate {
    // Relaxed: a request that races the switch is decided as if a moment earlier or later.
    active: Arc<AtomicBool>,
    // The names of the rules it switches: newcomers, persistent newcomers, newcomers by network.
    rules: Arc<[String; 3]>,
}

/// The rules that hold newcomers to their budgets, made by [`newcomer_rules`]: add the three rules
/// to the layer and the gate to the actuator ([`TowerActuator::with_newcomer_rules`]).
pub struct NewcomerRules {
    /// Every newcomer that is not persistent, in one bucket: the people arriving.
    pub newcomers: Rule,
    /// Persistent newcomers (sources active in many ticks of one session,
    /// [`Persistence`](crate::Persistence)), in a bucket of their own, so that a flood of machines
    /// cannot spend the budget of people arriving with it.
    pub persistent: Rule,
    /// Every newcomer that is not persistent, by network ([`NEWCOMER_NETWORK_PREFIXES`]): no
    /// network spends more than its share ([`NETWORK_SHARE_DIVISOR`]) of the newcomers' budget.
    pub by_network: Rule,
    /// Their switch, for the actuator.
    pub gate: NewcomerGate,
}

/// Rules that hold every client the monitor does not know as established to shared budgets while
/// the controller asks for it ([`Action::LimitNewcomers`]), and do nothing otherwise: `name` for
/// newcomers, `persistent_name` for persistent newcomers and `<name>-by-network` for each network
/// of newcomers ([`NewcomerRules`]). Clients are keyed as `trusted` keys them, which must be how
/// the observed rule keys them, so that the monitor's cohorts and these rules agree on who is who.
pub fn newcomer_rules(
    monitor: Arc<Monitor>,
    trusted: TrustedProxies,
    name: &str,
    persistent_name: &str,
) -> Result<NewcomerRules, ratelimit_core::PolicyError> {
    let network_name = format!("{name}-by-network");
    let gate = NewcomerGate {
        active: Arc::new(AtomicBool::new(false)),
        rules: Arc::new([
            name.to_string(),
            persistent_name.to_string(),
            network_name.clone(),
        ]),
    };
    // A network is a /24 or /48, or the clients' own prefix where that is coarser: a network is
    // never smaller than one client.
    let prefixes = trusted.prefixes();
    let (v4, v6) = NEWCOMER_NETWORK_PREFIXES;
    // Both prefixes are at most valid ones, so `new` cannot refuse them; were it to, the clients'
    // own prefixes are the next best networks.
    let networks = trusted.clone().with_prefixes(
        IpPrefixes::new(prefixes.v4().min(v4), prefixes.v6().min(v6)).unwrap_or(prefixes),
    );
    // Keyed by `key` (the newcomers' one bucket, or the client's network) when the gate is on
    // and the client's standing is `wanted`; skipped otherwise.
    let rule = |wanted: Standing,
                name: &str,
                key: CustomExtractor|
     -> Result<Rule, ratelimit_core::PolicyError> {
        let (active, monitor, trusted) = (gate.active.clone(), monitor.clone(), trusted.clone());
        let extractor = KeyExtractor::custom(move |request| {
            let client = trusted.client_key(request).ok()?;
            (monitor.standing(&client) == wanted)
                .then(|| key(request))
                .flatten()
        });
        // Switched off, the rule does not match at all: no key is looked for, and the rule's
        // keyless count stays for the requests it let through while on.
        Ok(Rule::new(name, extractor, Policy::per_second(1)?)
            .matching(Matcher::any().when(move |_| active.load(Ordering::Relaxed)))
            .on_missing_key(MissingKey::Skip))
    };
    let everyone = || -> CustomExtractor { Arc::new(|_| Some("newcomers".to_string())) };
    Ok(NewcomerRules {
        newcomers: rule(Standing::Newcomer, name, everyone())?,
        persistent: rule(Standing::Persistent, persistent_name, everyone())?,
        by_network: rule(
            Standing::Newcomer,
            &network_name,
            Arc::new(move |request| networks.client_key(request).ok()),
        )?,
        gate,
    })
}

/// Applies actions through a layer's handle: a key's penalty blocks it for its time to live, and
/// the global factor scales one rule's policy (from the one it had when the actuator was made).
pub struct TowerActuator {
    handle: RateLimitHandle,
    rule: String,
    base: Policy,
    // route -> (rule, its policy when mapped)
    routes: Vec<(String, String, Policy)>,
    // the newcomer rules' switch (which names them) and the tick
    newcomers: Option<(NewcomerGate, Duration)>,
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

    /// The same actuator setting the newcomer rules that `gate` switches (made by
    /// [`newcomer_rules`]) to the controller's budgets per `tick`.
    pub fn with_newcomer_rules(
        mut self,
        gate: NewcomerGate,
        tick: Duration,
    ) -> Result<Self, ControlError> {
        for rule in gate.rules.iter() {
            self.handle.policy(rule)?;
        }
        self.newcomers = Some((gate, tick));
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
                let Some((gate, tick)) = &self.newcomers else {
                    return;
                };
                // The whole budget may be spent at once: a tick's worth is the burst.
                let budget = |per_tick: u32| {
                    Policy::new(per_tick.max(1), *tick).and_then(|p| p.with_burst(per_tick.max(1)))
                };
                let [rule, persistent_rule, network_rule] = &*gate.rules;
                let budgets = [
                    (rule, *per_tick),
                    (persistent_rule, *persistent_per_tick),
                    (network_rule, per_tick / NETWORK_SHARE_DIVISOR),
                ];
                let mut set = true;
                for (rule, per_tick) in budgets {
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
                if let Some((gate, _)) = &self.newcomers {
                    gate.active.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}
