//! Hooks through which every decision reaches observers (anomaly detection, audit logs).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::Method;
use ratelimit_core::{Decision, StoreFailure};

/// What a rule decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted and debited.
    Admitted,
    /// Denied: the request got a 429 or `RESOURCE_EXHAUSTED`.
    Limited,
    /// Would have been denied, but the rule (or layer) is in shadow mode: let through.
    ShadowLimited,
    /// The key is blocked at runtime: denied without asking the store.
    Blocked,
    /// No key could be extracted and the rule skips such requests.
    NoKey,
}

/// One rule's decision for one request. Borrowed from the request: observers copy what they keep.
#[derive(Debug, Clone, Copy)]
pub struct DecisionEvent<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// The key the rule extracted from the request, without the rule's name: what
    /// [`RateLimitHandle::block`](crate::RateLimitHandle::block) takes (empty for [`Outcome::NoKey`]).
    pub key: &'a str,
    /// What was decided.
    pub outcome: Outcome,
    /// What the request cost under the rule.
    pub cost: u32,
    /// When the decision was made.
    pub at: Instant,
    /// The request method.
    pub method: &'a Method,
    /// The request path (for gRPC, `/package.Service/Method`).
    pub route: &'a str,
    /// The client's address, when known.
    pub client: Option<IpAddr>,
    /// The limit's decision, when the store made one.
    pub decision: Option<&'a Decision>,
    /// When the store failed and the failure policy decided instead: how it failed.
    pub degraded: Option<StoreFailure>,
}

/// How a request ended: after the inner service answered, or after the layer rejected it.
#[derive(Debug, Clone, Copy)]
pub struct ResponseEvent<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request path.
    pub route: &'a str,
    /// The client's address, when known.
    pub client: Option<IpAddr>,
    /// The HTTP status of the response (200 for gRPC; see `grpc_status`).
    pub status: u16,
    /// The gRPC status code in the response headers, when there is one (trailers are not seen).
    pub grpc_status: Option<u16>,
    /// Time from the request reaching the layer to the response head leaving it.
    pub latency: Duration,
    /// Whether the layer itself rejected the request.
    pub limited: bool,
}

/// Receives every decision of a layer.
///
/// Called on the request path, synchronously: an implementation must return at once, never block
/// and should not allocate (copy into preallocated counters or sketches, or push to a bounded
/// queue and drop when it is full). Observers act back on the layer through a
/// [`RateLimitHandle`](crate::RateLimitHandle).
pub trait DecisionObserver: Send + Sync + 'static {
    /// One rule's decision for a request.
    fn on_decision(&self, event: &DecisionEvent<'_>);

    /// How a request ended. Does nothing unless overridden.
    fn on_response(&self, event: &ResponseEvent<'_>) {
        let _ = event;
    }
}
