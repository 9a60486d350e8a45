//! The gateway's denied keys, taken from its layer's decisions into [`LimitedKeys`].
//!
//! Apart from the table because this is the tower side: which of a denied request's decisions
//! names the key that was over.

use std::sync::Arc;

use ratelimit_tower::{DecisionEvent, DecisionObserver, Outcome};

use super::limited::LimitedKeys;

/// Records, for every denied request, the keys that denied it.
pub struct LimitedKeysObserver {
    keys: Arc<LimitedKeys>,
}

impl LimitedKeysObserver {
    /// An observer recording into `keys`.
    pub fn new(keys: Arc<LimitedKeys>) -> Self {
        LimitedKeysObserver { keys }
    }
}

impl DecisionObserver for LimitedKeysObserver {
    fn on_decision(&self, event: &DecisionEvent<'_>) {
        let over = match event.outcome {
            Outcome::Blocked => true,
            // A request's rules are decided all or nothing: every rule of a denied request is
            // reported limited, and the one whose own limit had no room is the one that denied
            // it. Without a store decision (the failure policy denied) each rule is named.
            Outcome::Limited => event.decision.is_none_or(|d| !d.is_allowed()),
            Outcome::Admitted | Outcome::ShadowLimited | Outcome::NoKey => false,
        };
        if over {
            self.keys.record(event.rule, event.key);
        }
    }
}
