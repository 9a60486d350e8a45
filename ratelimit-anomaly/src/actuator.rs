//! Applying the controller's actions to a limiter at runtime.

use std::sync::Arc;

use ratelimit_core::{Clock, KeyedLimiter, MonotonicClock, Policy};

use crate::controller::{Action, Decided};

/// Something the controller's actions can be applied to.
pub trait Actuator: Send + Sync {
    /// Applies one action.
    fn apply(&self, action: &Action);

    /// Applies what is to be applied of a tick's decisions (shadow-mode decisions are skipped).
    fn apply_all(&self, decided: &[Decided]) {
        for decided in decided.iter().filter(|d| d.apply) {
            self.apply(&decided.action);
        }
    }
}

/// `policy` scaled by `factor` (a multiple of its rate and burst), at least one request of burst;
/// `policy` itself when the scaled one cannot be expressed.
pub fn scaled(policy: Policy, factor: f64) -> Policy {
    if !(factor.is_finite() && factor > 0.0) || factor >= 1.0 {
        return policy;
    }
    let interval = (policy.emission_interval_ns() as f64 / factor).ceil() as u64;
    let burst = ((f64::from(policy.burst()) * factor).floor() as u32).max(1);
    Policy::from_parts(interval, burst).unwrap_or(policy)
}

/// Applies actions to a [`KeyedLimiter`] keyed by strings: the global factor scales its default
/// policy (from the one it had when the actuator was made), and a penalised key gets `penalty`
/// as its own policy until lifted.
pub struct KeyedLimiterActuator<C: Clock = MonotonicClock> {
    limiter: Arc<KeyedLimiter<String, C>>,
    base: Policy,
    penalty: Policy,
}

impl<C: Clock> KeyedLimiterActuator<C> {
    /// An actuator for `limiter`, penalising keys with `penalty`.
    pub fn new(limiter: Arc<KeyedLimiter<String, C>>, penalty: Policy) -> Self {
        KeyedLimiterActuator {
            base: limiter.default_policy(),
            limiter,
            penalty,
        }
    }
}

impl<C: Clock> Actuator for KeyedLimiterActuator<C> {
    fn apply(&self, action: &Action) {
        match action {
            Action::PenalizeKey { key, .. } => self.limiter.set_policy(key.clone(), self.penalty),
            Action::LiftKey { key, .. } => self.limiter.clear_policy(key.as_str()),
            Action::ScaleGlobal { factor, .. } => {
                self.limiter.set_default_policy(scaled(self.base, *factor))
            }
            // A keyed limiter has no routes; route limits live in a layer's rules.
            // A bare keyed limiter has neither routes nor a rule for newcomers: these actions need
            // the tower actuator.
            Action::ScaleRoute { .. }
            | Action::LimitNewcomers { .. }
            | Action::LiftNewcomers { .. } => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controller::{Reason, Signal};
    use crate::monitor::Dimension;

    fn reason() -> Reason {
        Reason {
            signal: Signal::GlobalRate,
            score: 1.0,
            observed: 0.0,
            baseline: 0.0,
            key: None,
            ttl: None,
            cohort: crate::controller::Cohort::Everyone,
            until: crate::controller::Until::Lifted,
        }
    }

    #[test]
    fn scaling_keeps_a_valid_policy() {
        let base = Policy::per_second(100).unwrap().with_burst(10).unwrap();
        let half = scaled(base, 0.5);
        assert_eq!(half.burst(), 5);
        assert_eq!(half.emission_interval(), base.emission_interval() * 2);
        assert_eq!(scaled(base, 0.01).burst(), 1);
        assert_eq!(scaled(base, 1.0), base);
        assert_eq!(scaled(base, f64::NAN), base);
    }

    #[test]
    fn actions_reach_the_limiter() {
        let base = Policy::per_second(100).unwrap().with_burst(10).unwrap();
        let penalty = Policy::per_minute(1).unwrap();
        let limiter = Arc::new(KeyedLimiter::<String>::new(base));
        let actuator = KeyedLimiterActuator::new(limiter.clone(), penalty);
        actuator.apply(&Action::PenalizeKey {
            dimension: Dimension::Client,
            key: "10.0.0.1".into(),
            ttl: Duration::from_secs(60),
            reason: reason(),
        });
        assert_eq!(limiter.policy_for("10.0.0.1"), penalty);
        actuator.apply(&Action::ScaleGlobal {
            factor: 0.5,
            reason: reason(),
        });
        assert_eq!(limiter.default_policy().burst(), 5);
        actuator.apply(&Action::LiftKey {
            dimension: Dimension::Client,
            key: "10.0.0.1".into(),
            reason: reason(),
        });
        assert_eq!(limiter.policy_for("10.0.0.1").burst(), 5);
        actuator.apply(&Action::ScaleGlobal {
            factor: 1.0,
            reason: reason(),
        });
        assert_eq!(limiter.default_policy(), base);
    }
}
