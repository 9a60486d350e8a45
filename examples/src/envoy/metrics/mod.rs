//! The service's metrics, through the [`metrics`] facade, in the names and labels that
//! envoyproxy/ratelimit's Prometheus mapping (its statsd exporter's default mapper) gives them, so
//! that dashboards and alerts made for it work unchanged.
//!
//! Per rule, labelled `domain`, `key1` and, for a key of more than one level, `key2` (see
//! [`StatKey`]), each counting hits (a request's `hits_addend`, not requests):
//!
//! - `ratelimit_service_rate_limit_total_hits`: every hit on the rule;
//! - `ratelimit_service_rate_limit_over_limit`: hits over the limit;
//! - `ratelimit_service_rate_limit_near_limit`: hits within the limit but above its near-limit
//!   threshold (`requests_per_unit` × the near-limit ratio, 0.8 by default), and those of an
//!   over-limit request that were still below the limit;
//! - `ratelimit_service_rate_limit_within_limit`: hits of requests within the limit;
//! - `ratelimit_service_rate_limit_shadow_mode`: over-limit hits of a rule in shadow mode,
//!   answered `OK` anyway.
//!
//! Per call, labelled `grpc_method="ShouldRateLimit"`: `ratelimit_service_total_requests` and
//! the histogram `ratelimit_service_response_time_seconds`; errors answered,
//! `ratelimit_service_should_rate_limit_error{err_type="service_error"}`. From the reloader:
//! `ratelimit_service_config_load_success` and `ratelimit_service_config_load_error`.
//!
//! And this service's own: `ratelimit_service_requests_total{code="ok"|"over_limit"|"error"}`,
//! `ratelimit_service_shadow_over_limit_total` (requests with a shadow or quota-mode rule over),
//! `ratelimit_service_refused_total` (store calls the limiter refused as invalid),
//! `ratelimit_service_store_errors_total{kind=...}` (store calls the failure policy answered) and
//! the gauge `ratelimit_service_store_healthy` (1, or 0 while the store fails).
//!
//! The process installs one Prometheus recorder ([`install`]) and serves [`render`] on `/metrics`.
//! Without a recorder every macro is a no-op, so a library user who installs none pays little.
//!
//! The names, the recorder and the per-call records are in this file; the per-rule split of
//! hits is in `rule.rs`, and the tallies the status page reads in `tally.rs`.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use ratelimit_core::StoreFailure;
use thiserror::Error;

pub use super::config::StatKey;

mod rule;
mod tally;

pub use rule::{RuleHits, near_threshold, record_rule};
pub use tally::Metrics;

/// Hits on a rule.
pub const TOTAL_HITS: &str = "ratelimit_service_rate_limit_total_hits";
/// Hits over a rule's limit.
pub const OVER_LIMIT: &str = "ratelimit_service_rate_limit_over_limit";
/// Hits above a rule's near-limit threshold.
pub const NEAR_LIMIT: &str = "ratelimit_service_rate_limit_near_limit";
/// Hits within a rule's limit.
pub const WITHIN_LIMIT: &str = "ratelimit_service_rate_limit_within_limit";
/// Over-limit hits of a rule in shadow mode.
pub const SHADOW_MODE: &str = "ratelimit_service_rate_limit_shadow_mode";
/// `ShouldRateLimit` calls.
pub const TOTAL_REQUESTS: &str = "ratelimit_service_total_requests";
/// How long `ShouldRateLimit` took to decide, in seconds.
pub const RESPONSE_TIME: &str = "ratelimit_service_response_time_seconds";
/// `ShouldRateLimit` calls answered with an error, by `err_type`.
pub const SHOULD_RATE_LIMIT_ERROR: &str = "ratelimit_service_should_rate_limit_error";
/// Configurations the reloader loaded.
pub const CONFIG_LOAD_SUCCESS: &str = "ratelimit_service_config_load_success";
/// Configurations the reloader refused.
pub const CONFIG_LOAD_ERROR: &str = "ratelimit_service_config_load_error";
/// `ShouldRateLimit` answers by `code` (this service's own).
pub const REQUESTS: &str = "ratelimit_service_requests_total";
/// Requests with a shadow or quota-mode rule over its limit (this service's own).
pub const SHADOW_OVER_LIMIT: &str = "ratelimit_service_shadow_over_limit_total";
/// Store calls the limiter refused as invalid (this service's own).
pub const REFUSED: &str = "ratelimit_service_refused_total";
/// Store calls that failed and were answered by the failure policy, by `kind` (this service's
/// own).
pub const STORE_ERRORS: &str = "ratelimit_service_store_errors_total";
/// How many replicas this one assumes share the store: `--replicas`, or the live count of the
/// membership in the store when that is larger (this service's own).
pub const REPLICAS: &str = "ratelimit_service_replicas";
/// Whether the store is healthy, 1 or 0 (this service's own).
pub const STORE_HEALTHY: &str = "ratelimit_service_store_healthy";

/// The `grpc_method` label of the per-call metrics.
const SHOULD_RATE_LIMIT: &str = "ShouldRateLimit";

/// The response-time histogram's buckets, in seconds: a decision takes well under a
/// millisecond against a local store and a few against a remote one, so the finest buckets are
/// below Prometheus' defaults, which follow up to ten seconds.
const RESPONSE_TIME_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// envoyproxy/ratelimit's default near-limit ratio (`NEAR_LIMIT_RATIO`).
pub const DEFAULT_NEAR_LIMIT_RATIO: f64 = 0.8;

/// Why the metrics cannot be exported.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The Prometheus recorder could not be built or installed (another global recorder is
    /// already installed, say).
    #[error("the Prometheus recorder: {0}")]
    Recorder(#[from] BuildError),
}

/// The Prometheus exporter as this service configures it (a true histogram for the response
/// time), to install or, in tests, to build a local recorder from.
pub fn builder() -> Result<PrometheusBuilder, MetricsError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RESPONSE_TIME.into()), RESPONSE_TIME_BUCKETS)?)
}

/// Installs the Prometheus recorder as the process's global recorder, once, and describes every
/// metric; the handle renders them ([`render`]). A second call fails: there is one global
/// recorder.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = builder()?.install_recorder()?;
    describe();
    Ok(handle)
}

/// The metrics in Prometheus' text format, with the store's health as of now.
pub fn render(handle: &PrometheusHandle, store_healthy: bool) -> String {
    record_store_health(store_healthy);
    handle.render()
}

/// Sets the replicas gauge.
pub fn record_replicas(replicas: u32) {
    metrics::gauge!(REPLICAS).set(f64::from(replicas));
}

/// Sets the store-health gauge: 1 healthy, 0 while the store fails and the failure policy
/// decides.
pub fn record_store_health(healthy: bool) {
    gauge!(STORE_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
}

/// Gives every metric its `# HELP` text in the current recorder.
pub fn describe() {
    describe_gauge!(
        REPLICAS,
        "Replicas this one assumes share the store (the setting, or the live count if larger)."
    );
    describe_counter!(TOTAL_HITS, "Hits on a rate limit rule.");
    describe_counter!(OVER_LIMIT, "Hits over a rate limit rule's limit.");
    describe_counter!(
        NEAR_LIMIT,
        "Hits above a rate limit rule's near-limit threshold, up to its limit."
    );
    describe_counter!(
        WITHIN_LIMIT,
        "Hits of requests within a rate limit rule's limit."
    );
    describe_counter!(
        SHADOW_MODE,
        "Over-limit hits of a rule in shadow mode, answered OK anyway."
    );
    describe_counter!(TOTAL_REQUESTS, "Calls, by gRPC method.");
    describe_histogram!(
        RESPONSE_TIME,
        metrics::Unit::Seconds,
        "How long a call took to decide, by gRPC method."
    );
    describe_counter!(
        SHOULD_RATE_LIMIT_ERROR,
        "ShouldRateLimit calls answered with an error, by error type."
    );
    describe_counter!(CONFIG_LOAD_SUCCESS, "Configurations the reloader loaded.");
    describe_counter!(
        CONFIG_LOAD_ERROR,
        "Settled configurations the reloader refused (invalid, unreadable, or not countable)."
    );
    describe_counter!(REQUESTS, "ShouldRateLimit calls by answer.");
    describe_counter!(
        SHADOW_OVER_LIMIT,
        "Requests with a descriptor in shadow or quota mode over its limit."
    );
    describe_counter!(
        REFUSED,
        "Store calls the limiter refused as invalid, answered OVER_LIMIT."
    );
    describe_counter!(
        STORE_ERRORS,
        "Store calls that failed and were answered by the failure policy, by kind."
    );
    describe_gauge!(
        STORE_HEALTHY,
        "Whether the last store call succeeded (0: the failure policy decides)."
    );
}

/// One `ShouldRateLimit` call and how long it took to decide.
pub fn record_call(took: Duration) {
    counter!(TOTAL_REQUESTS, "grpc_method" => SHOULD_RATE_LIMIT).increment(1);
    metrics::histogram!(RESPONSE_TIME, "grpc_method" => SHOULD_RATE_LIMIT)
        .record(took.as_secs_f64());
}

/// A store call that failed and that the failure policy answered.
pub fn record_store_error(failure: StoreFailure) {
    let kind = match failure {
        StoreFailure::Unavailable => "unavailable",
        StoreFailure::Timeout => "timeout",
        StoreFailure::BadReply => "bad_reply",
        StoreFailure::Misconfigured => "misconfigured",
        StoreFailure::Request => "request",
        StoreFailure::CircuitOpen => "circuit_open",
    };
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// A configuration the reloader loaded.
pub fn record_config_loaded() {
    counter!(CONFIG_LOAD_SUCCESS).increment(1);
}

/// A configuration the reloader refused.
pub fn record_config_refused() {
    counter!(CONFIG_LOAD_ERROR).increment(1);
}

/// Makes the reloader's counters appear at zero, so that a dashboard sees them from the start.
pub fn register_config_loads() {
    counter!(CONFIG_LOAD_SUCCESS).absolute(0);
    counter!(CONFIG_LOAD_ERROR).absolute(0);
}

#[cfg(test)]
mod tests;
