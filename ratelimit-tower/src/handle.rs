//! The handle that changes a running layer: policies, blocked keys, counters.
//!
//! Apart from the layer because it outlives the building: observers and operators hold it while
//! the services run, and it touches only the shared state, never the builder.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::Policy;

use crate::metrics::{self, RuleCounters};
use crate::rule::Rule;
use crate::shared::Shared;

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

/// Changes a running layer: a rule's policy, blocked keys. Cheap to clone; share it with observers.
#[derive(Clone)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl RateLimitHandle {
    /// The handle of the layer whose state is `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RateLimitHandle { shared }
    }

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
        self.shared.blocks.block(key, ttl);
        tracing::warn!(key, ?ttl, "key blocked");
    }

    /// Lifts a block before its time.
    pub fn unblock(&self, key: &str) {
        self.shared.blocks.unblock(key);
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

    /// Writes every rule's counters into the current `metrics` recorder, as absolute values of
    /// [`DECISIONS_METRIC`](crate::DECISIONS_METRIC) labelled `rule` and `outcome`: call it before an
    /// exporter renders (metrics-exporter-prometheus for a `/metrics` page), globally or inside
    /// `metrics::with_local_recorder`. Without a recorder it does nothing.
    pub fn record_metrics(&self) {
        metrics::record(
            self.shared
                .rules
                .iter()
                .map(Rule::name)
                .zip(self.shared.counters.iter()),
        );
    }

    fn rule(&self, name: &str) -> Result<&Rule, ControlError> {
        self.shared
            .rules
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| ControlError::UnknownRule(name.to_string()))
    }
}

impl std::fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitHandle").finish_non_exhaustive()
    }
}
