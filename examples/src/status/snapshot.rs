//! What `/status.json` returns: everything the page draws, in one serializable value.
//!
//! Apart from the board that fills it so that the page's contract reads in one place: the page's
//! script reads these names and nothing else.

use serde::Serialize;

use super::anomaly::AnomalyView;
use super::history::{Sample, Totals};
use super::limited::LimitedKey;

/// The status of a gateway or a service at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// What is reporting (`ratelimit gateway`, `ratelimit-service`).
    pub title: String,
    /// When the snapshot was taken, in seconds since the Unix epoch.
    pub now: f64,
    /// Seconds since the board started.
    pub uptime_seconds: u64,
    /// Decisions and denials since the start.
    pub totals: Totals,
    /// The newest one-second sample (zeros before the first).
    pub current: Rate,
    /// Decisions and denials a second over the last minutes, oldest first.
    pub history: Vec<Sample>,
    /// The most limited keys now, the most limited first.
    pub limited_keys: Vec<LimitedKey>,
    /// The store's health and what decides while it fails.
    pub store: StoreStatus,
    /// The anomaly controller, where one runs.
    pub anomaly: Option<AnomalyView>,
    /// Counters by rule (gateway) or by answer (service).
    pub breakdown: Vec<Breakdown>,
    /// Other facts worth a line: the domains served, the replicas counted.
    pub facts: Vec<Fact>,
}

/// Decisions and denials a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Decisions a second.
    pub decisions: f64,
    /// Denials a second.
    pub denials: f64,
}

/// The store's health and failure mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    /// What the store is (`memory`, `redis`, ...), never its address or credentials.
    pub kind: String,
    /// Whether the last call to every node of the store succeeded.
    pub healthy: bool,
    /// The failure policy's name: `LocalFallback`, `Open` or `Closed`.
    pub failure_policy: String,
    /// What happens to requests now, in words: decided by the store, or by the failure policy.
    pub mode: String,
    /// The replicas this one assumes share the store (the local fallback's divisor).
    pub replicas: u32,
}

/// One row of counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    /// The row's name: a rule, or `answers`.
    pub name: String,
    /// `(outcome, count)` pairs, in a fixed order.
    pub counts: Vec<(String, u64)>,
}

/// A named fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fact {
    /// What it is.
    pub name: String,
    /// Its value, as text.
    pub value: String,
}

impl Fact {
    /// A fact named `name` of value `value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Fact {
            name: name.into(),
            value: value.into(),
        }
    }
}
