//! The layer, its builder, and the handle that changes it at runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use parking_lot::RwLock;
use ratelimit_core::{Limiter, Policy};

use crate::metrics::{self, RuleCounters};
use crate::observer::DecisionObserver;
use crate::response::{HeaderOptions, Rejection};
use crate::rule::Rule;
use crate::service::RateLimit;

/// Builds a custom rejection response.
pub type RejectionFn = Arc<dyn Fn(&Rejection) -> Response<Bytes> + Send + Sync>;

/// Why a layer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A layer needs at least one rule.
    #[error("a rate-limit layer needs at least one rule")]
    NoRules,
    /// Rule names go into header fields and metric labels.
    #[error("rule name {0:?} must be 1 to 64 letters, digits or -_.:/")]
    InvalidRuleName(String),
    /// Two rules with one name would share counters and buckets.
    #[error("two rules are named {0:?}")]
    DuplicateRuleName(String),
    /// A rule's cost can never fit its burst.
    #[error("rule {rule:?} costs {cost} but its burst is {burst}")]
    CostExceedsBurst {
        /// The rule.
        rule: String,
        /// Its cost.
        cost: u32,
        /// Its burst.
        burst: u32,
    },
}

/// Why a runtime change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No rule has that name.
    #[error("no rule is named {0:?}")]
    UnknownRule(String),
    /// The new policy's burst cannot hold the rule's cost.
    #[error("a burst of {burst} cannot hold the rule's cost of {cost}")]
    CostExceedsBurst {
        /// The rule's cost.
        cost: u32,
        /// The refused policy's burst.
        burst: u32,
    },
}

pub(crate) struct Shared {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) counters: Vec<RuleCounters>,
    pub(crate) shadow: bool,
    pub(crate) headers: HeaderOptions,
    pub(crate) observers: Vec<Arc<dyn DecisionObserver>>,
    pub(crate) rejection: Option<RejectionFn>,
    pub(crate) blocks: Blocks,
}

/// Keys blocked at runtime, each until an instant.
#[derive(Default)]
pub(crate) struct Blocks {
    // Relaxed: a request that races a new block may pass once, as if it had come a moment earlier.
    any: AtomicBool,
    until: RwLock<HashMap<String, Instant>>,
}

impl Blocks {
    /// How long `key` stays blocked, if it is.
    pub(crate) fn remaining(&self, key: &str) -> Option<Duration> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let until = *self.until.read().get(key)?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }
}

/// A tower [`Layer`](tower_layer::Layer) that checks every request against its rules before the
/// inner service sees it. Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(crate) shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// A builder over `limiter` (a store with its failure policy and deadline).
    pub fn builder(limiter: Arc<Limiter>) -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            limiter,
            rules: Vec::new(),
            shadow: false,
            headers: HeaderOptions::default(),
            observers: Vec::new(),
            rejection: None,
        }
    }

    /// The handle through which observers and operators change the layer at runtime.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> tower_layer::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}

/// Sets up a [`RateLimitLayer`].
pub struct RateLimitLayerBuilder {
    limiter: Arc<Limiter>,
    rules: Vec<Rule>,
    shadow: bool,
    headers: HeaderOptions,
    observers: Vec<Arc<dyn DecisionObserver>>,
    rejection: Option<RejectionFn>,
}

impl RateLimitLayerBuilder {
    /// Adds a rule. A request is checked against every rule that matches it, all-or-nothing.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Shadow mode for the whole layer: decide, count and log, but let every request through.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Which rate-limit header fields to send.
    pub fn headers(mut self, headers: HeaderOptions) -> Self {
        self.headers = headers;
        self
    }

    /// Adds an observer of every decision.
    pub fn observer(mut self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Replaces the rejection response. The rate-limit header fields and `Retry-After` are added
    /// to what it returns.
    pub fn rejection(
        mut self,
        rejection: impl Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.rejection = Some(Arc::new(rejection));
        self
    }

    /// The layer, once its rules are checked.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::NoRules);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let name = rule.name();
            let valid = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
            if !valid {
                return Err(ConfigError::InvalidRuleName(name.to_string()));
            }
            if self.rules.iter().take(i).any(|r| r.name() == name) {
                return Err(ConfigError::DuplicateRuleName(name.to_string()));
            }
            let burst = rule.policy().burst();
            if rule.cost == 0 || rule.cost > burst {
                return Err(ConfigError::CostExceedsBurst {
                    rule: name.to_string(),
                    cost: rule.cost,
                    burst,
                });
            }
        }
        let counters = self.rules.iter().map(|_| RuleCounters::default()).collect();
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                limiter: self.limiter,
                rules: self.rules,
                counters,
                shadow: self.shadow,
                headers: self.headers,
                observers: self.observers,
                rejection: self.rejection,
                blocks: Blocks::default(),
            }),
        })
    }
}

/// Changes a running layer: a rule's policy, blocked keys. Cheap to clone; share it with observers.
#[derive(Clone)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl RateLimitHandle {
    /// Sets a rule's policy, from the next request on.
    pub fn set_policy(&self, rule: &str, policy: Policy) -> Result<(), ControlError> {
        let rule = self.rule(rule)?;
        if rule.cost > policy.burst() {
            return Err(ControlError::CostExceedsBurst {
                cost: rule.cost,
                burst: policy.burst(),
            });
        }
        rule.policy.store(policy);
        tracing::info!(rule = %rule.name, ?policy, "rate-limit policy changed");
        Ok(())
    }

    /// A rule's policy now.
    pub fn policy(&self, rule: &str) -> Result<Policy, ControlError> {
        Ok(self.rule(rule)?.policy())
    }

    /// Denies every request whose extracted key (under any rule) is `key`, for `ttl`.
    pub fn block(&self, key: &str, ttl: Duration) {
        let mut until = self.shared.blocks.until.write();
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert(key.to_string(), now + ttl);
        self.shared.blocks.any.store(true, Ordering::Relaxed);
        tracing::warn!(key, ?ttl, "key blocked");
    }

    /// Lifts a block before its time.
    pub fn unblock(&self, key: &str) {
        let mut until = self.shared.blocks.until.write();
        until.remove(key);
        self.shared
            .blocks
            .any
            .store(!until.is_empty(), Ordering::Relaxed);
    }

    /// The names of the layer's rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &str> {
        self.shared.rules.iter().map(Rule::name)
    }

    /// A rule's counters.
    pub fn counters(&self, rule: &str) -> Result<&RuleCounters, ControlError> {
        let index = self
            .shared
            .rules
            .iter()
            .position(|r| r.name() == rule)
            .ok_or_else(|| ControlError::UnknownRule(rule.to_string()))?;
        self.shared
            .counters
            .get(index)
            .ok_or_else(|| ControlError::UnknownRule(rule.to_string()))
    }

    /// Every rule's counters in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        metrics::render(
            self.shared
                .rules
                .iter()
                .map(Rule::name)
                .zip(self.shared.counters.iter()),
        )
    }

    fn rule(&self, name: &str) -> Result<&Rule, ControlError> {
        self.shared
            .rules
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| ControlError::UnknownRule(name.to_string()))
    }
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("rules", &self.shared.rules)
            .field("shadow", &self.shared.shadow)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitHandle").finish_non_exhaustive()
    }
}
