//! The state a layer shares with every service it wraps and every handle it gives out.
//!
//! In a file of its own so that the layer, the service and the handle each depend on it and none
//! of them on another: the layer builds it, the service reads it per request, the handle changes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use ratelimit_core::Limiter;

use crate::metrics::RuleCounters;
use crate::observer::DecisionObserver;
use crate::response::{HeaderOptions, RejectionFn};
use crate::rule::Rule;

/// A layer's rules, settings and runtime state, behind one `Arc`.
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

    /// Blocks `key` for `ttl` from now, forgetting blocks that have run out.
    pub(crate) fn block(&self, key: &str, ttl: Duration) {
        let mut until = self.until.write();
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert(key.to_string(), now + ttl);
        self.any.store(true, Ordering::Relaxed);
    }

    /// Lifts `key`'s block, if it has one.
    pub(crate) fn unblock(&self, key: &str) {
        let mut until = self.until.write();
        until.remove(key);
        self.any.store(!until.is_empty(), Ordering::Relaxed);
    }
}
