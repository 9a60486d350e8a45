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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Label, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use ratelimit_core::StoreFailure;
use thiserror::Error;

pub use super::config::StatKey;

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

/// How envoyproxy/ratelimit splits one descriptor's hits on a rule (its base limiter's
/// `GetResponseDescriptorStatus`), from the rule's count before and after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleHits {
    /// Every hit.
    pub total: u64,
    /// Hits over the limit.
    pub over: u64,
    /// Hits above the near-limit threshold and not over the limit.
    pub near: u64,
    /// The hits of a descriptor within the limit (all of them, near or not).
    pub within: u64,
    /// Over-limit hits of a rule in shadow mode.
    pub shadow: u64,
}

impl RuleHits {
    /// The split of `hits` on a rule of `limit` requests whose count was `before`, with the
    /// near-limit threshold `near` ([`near_threshold`]) and the rule in shadow mode or not.
    ///
    /// Over the limit (`before + hits > limit`): when the count already was, every hit is over;
    /// otherwise the hits above the limit are over and those between the larger of the
    /// threshold and `before`, and the limit, are near. Within it: every hit is within, and the
    /// hits above the threshold are also near. A rule in shadow mode counts its over-limit hits
    /// a second time as shadow.
    pub fn split(limit: u64, near: u64, before: u64, hits: u64, shadow_mode: bool) -> Self {
        let after = before.saturating_add(hits);
        let mut split = RuleHits {
            total: hits,
            ..RuleHits::default()
        };
        if after > limit {
            split.over = if before >= limit { hits } else { after - limit };
            if before < limit {
                split.near = limit - near.max(before).min(limit);
            }
            if shadow_mode {
                split.shadow = split.over;
            }
        } else {
            if after > near {
                split.near = if before >= near { hits } else { after - near };
            }
            split.within = hits;
        }
        split
    }
}

/// envoyproxy/ratelimit's near-limit threshold of a limit: `floor(limit × ratio)`, computed in
/// single precision as it does, so that the same limit and ratio give the same threshold (10 ×
/// 0.8 is 8 there, and would be 8 in double precision too; other products can differ).
pub fn near_threshold(limit: u32, ratio: f64) -> u64 {
    // As in Go: float32(limit) * float32(ratio), floored, converted back (saturating).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let threshold = ((limit as f32) * (ratio as f32)).floor() as u64;
    threshold
}

/// Counts one descriptor's hits on the rule `stat`: only the counters that grow, so that a
/// request costs a registry lookup per counter it moves.
pub fn record_rule(stat: &StatKey, hits: &RuleHits) {
    let labels = rule_labels(stat);
    for (name, value) in [
        (TOTAL_HITS, hits.total),
        (OVER_LIMIT, hits.over),
        (NEAR_LIMIT, hits.near),
        (WITHIN_LIMIT, hits.within),
        (SHADOW_MODE, hits.shadow),
    ] {
        if value > 0 {
            counter!(name, labels.clone()).increment(value);
        }
    }
}

/// The labels of a rule, as envoyproxy/ratelimit's mapping makes them from its stat key.
fn rule_labels(stat: &StatKey) -> Vec<Label> {
    let mut labels = Vec::with_capacity(3);
    labels.push(Label::new("domain", stat.domain().to_owned()));
    labels.push(Label::new("key1", stat.key1().to_owned()));
    if let Some(key2) = stat.key2() {
        labels.push(Label::new("key2", key2.to_owned()));
    }
    labels
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

/// What the service has answered: each answer goes to the recorder ([`metrics`]) and is tallied
/// here as well, for the status page and for callers that have no recorder.
#[derive(Debug, Default)]
pub struct Metrics {
    // Relaxed: independent counters, read for display only.
    ok: AtomicU64,
    over_limit: AtomicU64,
    shadow_over_limit: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
}

impl Metrics {
    /// One request answered: over limit or not.
    pub fn answered(&self, over: bool) {
        let (tally, code) = if over {
            (&self.over_limit, "over_limit")
        } else {
            (&self.ok, "ok")
        };
        tally.fetch_add(1, Ordering::Relaxed);
        counter!(REQUESTS, "code" => code).increment(1);
    }

    /// One request answered with an error status: envoyproxy/ratelimit's `service_error`, the
    /// type of a request it cannot decide.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        counter!(REQUESTS, "code" => "error").increment(1);
        counter!(SHOULD_RATE_LIMIT_ERROR, "err_type" => "service_error").increment(1);
    }

    /// One request with a descriptor in shadow or quota mode over its limit.
    pub fn shadow_over_limit(&self) {
        self.shadow_over_limit.fetch_add(1, Ordering::Relaxed);
        counter!(SHADOW_OVER_LIMIT).increment(1);
    }

    /// One store call the limiter refused as invalid.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        counter!(REFUSED).increment(1);
    }

    /// Requests answered `OK`.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests answered `OVER_LIMIT`.
    pub fn over_limit(&self) -> u64 {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// Requests answered with an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The tallies for people (the status page), one `name value` a line; `/metrics` is the
    /// recorder's ([`render`]).
    pub fn render(&self) -> String {
        format!(
            "ok {}\nover_limit {}\nerror {}\nshadow_over_limit {}\nrefused {}\n",
            self.ok(),
            self.over_limit(),
            self.errors(),
            self.shadow_over_limit.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The exposition text of what `f` records, in a recorder of its own.
    fn recorded(f: impl FnOnce()) -> String {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            f();
        });
        handle.render()
    }

    /// The value of the sample `sample` (name and labels, exactly as rendered).
    fn value(text: &str, sample: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn splits_hits_as_envoyproxy_does() {
        let near = near_threshold(10, DEFAULT_NEAR_LIMIT_RATIO);
        assert_eq!(near, 8);
        // Well within: 3 hits from 0.
        assert_eq!(
            RuleHits::split(10, near, 0, 3, false),
            RuleHits {
                total: 3,
                within: 3,
                ..RuleHits::default()
            }
        );
        // Crossing the threshold: 7 to 10, the two above 8 are near.
        assert_eq!(
            RuleHits::split(10, near, 7, 3, false),
            RuleHits {
                total: 3,
                near: 2,
                within: 3,
                ..RuleHits::default()
            }
        );
        // Already above it: every hit near.
        assert_eq!(RuleHits::split(10, near, 8, 2, false).near, 2);
        // Crossing the limit from 9 with 4: 3 over, 1 near (9 to 10).
        assert_eq!(
            RuleHits::split(10, near, 9, 4, true),
            RuleHits {
                total: 4,
                over: 3,
                near: 1,
                shadow: 3,
                ..RuleHits::default()
            }
        );
        // Crossing it from below the threshold: near is threshold to limit.
        assert_eq!(RuleHits::split(10, near, 5, 10, false).near, 2);
        // Already over: every hit over, none near.
        assert_eq!(
            RuleHits::split(10, near, 10, 2, false),
            RuleHits {
                total: 2,
                over: 2,
                ..RuleHits::default()
            }
        );
        // A limit of zero: every hit over.
        assert_eq!(RuleHits::split(0, 0, 0, 1, false).over, 1);
        // Checking only (no hit) counts nothing.
        assert_eq!(RuleHits::split(10, near, 9, 0, false).total, 0);
    }

    #[test]
    fn near_threshold_is_envoyproxys() {
        assert_eq!(near_threshold(100, 0.8), 80);
        assert_eq!(near_threshold(5, 0.5), 2);
        assert_eq!(near_threshold(3, 0.0), 0);
        assert_eq!(near_threshold(7, 1.0), 7);
    }

    #[test]
    fn rules_are_labelled_by_domain_and_keys() {
        let mut one = StatKey::new("edge");
        one.push("remote_address", None);
        let mut two = StatKey::new("edge");
        two.push("tenant", Some("acme"));
        two.push("plan", Some("free"));
        let text = recorded(|| {
            record_rule(&one, &RuleHits::split(10, 8, 9, 2, false));
            record_rule(&two, &RuleHits::split(10, 8, 0, 1, false));
        });
        let rule1 = "{domain=\"edge\",key1=\"remote_address\"}";
        assert_eq!(value(&text, &format!("{TOTAL_HITS}{rule1}")), Some(2.0));
        assert_eq!(value(&text, &format!("{OVER_LIMIT}{rule1}")), Some(1.0));
        assert_eq!(value(&text, &format!("{NEAR_LIMIT}{rule1}")), Some(1.0));
        // Counters that did not grow are not there.
        assert_eq!(value(&text, &format!("{WITHIN_LIMIT}{rule1}")), None);
        let rule2 = "{domain=\"edge\",key1=\"tenant_acme\",key2=\"plan_free\"}";
        assert_eq!(value(&text, &format!("{TOTAL_HITS}{rule2}")), Some(1.0));
        assert_eq!(value(&text, &format!("{WITHIN_LIMIT}{rule2}")), Some(1.0));
        assert!(
            text.contains(&format!("# TYPE {TOTAL_HITS} counter")),
            "{text}"
        );
    }

    #[test]
    fn calls_store_and_reloads_have_their_names() {
        let text = recorded(|| {
            record_call(Duration::from_micros(300));
            record_store_error(StoreFailure::Timeout);
            record_store_health(false);
            register_config_loads();
            record_config_refused();
            let tallies = Metrics::default();
            tallies.answered(true);
            tallies.error();
        });
        let method = "{grpc_method=\"ShouldRateLimit\"}";
        assert_eq!(
            value(&text, &format!("{TOTAL_REQUESTS}{method}")),
            Some(1.0)
        );
        assert_eq!(
            value(&text, &format!("{RESPONSE_TIME}_count{method}")),
            Some(1.0)
        );
        // A true histogram: 300 µs is in the 0.0005 bucket and not the 0.00025 one.
        let bucket = |le: &str| {
            value(
                &text,
                &format!("{RESPONSE_TIME}_bucket{{grpc_method=\"ShouldRateLimit\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.00025"), Some(0.0));
        assert_eq!(bucket("0.0005"), Some(1.0));
        assert_eq!(
            value(&text, &format!("{STORE_ERRORS}{{kind=\"timeout\"}}")),
            Some(1.0)
        );
        assert_eq!(value(&text, STORE_HEALTHY), Some(0.0));
        assert_eq!(value(&text, CONFIG_LOAD_SUCCESS), Some(0.0));
        assert_eq!(value(&text, CONFIG_LOAD_ERROR), Some(1.0));
        assert_eq!(
            value(&text, &format!("{REQUESTS}{{code=\"over_limit\"}}")),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("{SHOULD_RATE_LIMIT_ERROR}{{err_type=\"service_error\"}}")
            ),
            Some(1.0)
        );
    }

    #[test]
    fn a_second_global_install_is_an_error_not_a_panic() {
        // The first may fail too if another test of this binary installed one: either way, at
        // most one succeeds and the others are typed errors.
        let first = install();
        let second = install();
        assert!(first.is_ok() || second.is_err());
        assert!(matches!(second, Err(MetricsError::Recorder(_))));
    }
}
