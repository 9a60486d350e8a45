//! Where the numbers come from: the counters the gateway's layer and the service already keep,
//! read as decisions and denials since the start.
//!
//! Apart from the board so that the board knows nothing of either: each reports through
//! [`Source`], and the board samples whichever it is given.

use std::sync::Arc;

use parking_lot::RwLock;
use ratelimit_tower::RateLimitHandle;

use super::history::Totals;
use super::snapshot::{Breakdown, Fact};
use crate::envoy::config::Config;
use crate::envoy::metrics::Metrics;

/// Cumulative counters a status board samples.
pub trait Source: Send + Sync + 'static {
    /// Decisions and denials since the start. Called once a second and for every snapshot:
    /// reads counters, never waits.
    fn totals(&self) -> Totals;

    /// The counters, row by row, for the page's table.
    fn breakdown(&self) -> Vec<Breakdown>;

    /// Facts worth a line on the page. None unless overridden.
    fn facts(&self) -> Vec<Fact> {
        Vec::new()
    }
}

/// The gateway's layer: every rule's counters on its [`RateLimitHandle`].
pub struct LayerCounters {
    handle: RateLimitHandle,
    every_request: String,
}

impl LayerCounters {
    /// The counters of `handle`'s layer; `every_request` names a rule that every request is
    /// decided under (the gateway's `global`), whose decisions are the layer's.
    pub fn new(handle: RateLimitHandle, every_request: &str) -> Self {
        LayerCounters {
            handle,
            every_request: every_request.to_string(),
        }
    }
}

/// A count out of a rule's `(outcome, count)` pairs.
fn count(counts: &[(&'static str, u64)], name: &str) -> u64 {
    counts
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}

impl Source for LayerCounters {
    /// A request's rules are decided together, all or nothing, so the rule every request goes
    /// under counts each decided request once (admitted, limited or shadow-limited) whichever
    /// rule denied it. A blocked key is answered before any store call, at the first rule whose
    /// key is blocked, and counted there only: blocked requests are added from every rule.
    fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for rule in self.handle.rules() {
            let Ok(counters) = self.handle.counters(rule) else {
                continue;
            };
            let counts = counters.snapshot();
            let blocked = count(&counts, "blocked");
            totals.decisions += blocked;
            totals.denials += blocked;
            if rule == self.every_request {
                let limited = count(&counts, "limited");
                totals.decisions +=
                    count(&counts, "admitted") + limited + count(&counts, "shadow_limited");
                totals.denials += limited;
            }
        }
        totals
    }

    fn breakdown(&self) -> Vec<Breakdown> {
        self.handle
            .rules()
            .filter_map(|rule| {
                let counters = self.handle.counters(rule).ok()?;
                Some(Breakdown {
                    name: rule.to_string(),
                    counts: counters
                        .snapshot()
                        .iter()
                        .map(|(name, value)| ((*name).to_string(), *value))
                        .collect(),
                })
            })
            .collect()
    }
}

/// The rate limit service's tallies of its answers, and its configuration's domains.
pub struct ServiceCounters {
    metrics: Arc<Metrics>,
    config: Arc<RwLock<Arc<Config>>>,
}

impl ServiceCounters {
    /// The service's `metrics` ([`RateLimitServer::metrics`](crate::envoy::service::RateLimitServer::metrics))
    /// and its configuration's handle.
    pub fn new(metrics: Arc<Metrics>, config: Arc<RwLock<Arc<Config>>>) -> Self {
        ServiceCounters { metrics, config }
    }
}

impl Source for ServiceCounters {
    /// A decision is a request answered `OK` or `OVER_LIMIT`; an error answer decided nothing.
    fn totals(&self) -> Totals {
        let over = self.metrics.over_limit();
        Totals {
            decisions: self.metrics.ok() + over,
            denials: over,
        }
    }

    fn breakdown(&self) -> Vec<Breakdown> {
        let counts = [
            ("ok", self.metrics.ok()),
            ("over_limit", self.metrics.over_limit()),
            ("error", self.metrics.errors()),
            ("shadow_over_limit", self.metrics.shadow_over_limits()),
            ("refused", self.metrics.refusals()),
        ];
        vec![Breakdown {
            name: "answers".to_string(),
            counts: counts
                .iter()
                .map(|(name, value)| ((*name).to_string(), *value))
                .collect(),
        }]
    }

    fn facts(&self) -> Vec<Fact> {
        let config = self.config.read().clone();
        let mut domains: Vec<&str> = config.domains().collect();
        domains.sort_unstable();
        vec![Fact::new("domains", domains.join(", "))]
    }
}
