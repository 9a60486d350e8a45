//! The layer and its builder: what an application configures once, before serving.
//!
//! The state they build lives in `shared.rs`, the service in `service/` and the runtime handle in
//! `handle.rs`; this file depends on those and none of them on it.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use ratelimit_core::Limiter;

use crate::handle::RateLimitHandle;
use crate::metrics::RuleCounters;
use crate::observer::DecisionObserver;
use crate::response::{HeaderOptions, Rejection, RejectionFn};
use crate::rule::Rule;
use crate::service::RateLimit;
use crate::shared::{Blocks, Shared};

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
        RateLimitHandle::new(self.shared.clone())
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

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("rules", &self.shared.rules)
            .field("shadow", &self.shared.shadow)
            .finish_non_exhaustive()
    }
}
