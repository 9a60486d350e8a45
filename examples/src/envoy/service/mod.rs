//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) on a
//! ratelimit [`Limiter`], for Envoy, Istio or any Envoy-based gateway.
//!
//! A request names a domain and carries descriptors; each descriptor that the configuration gives
//! a limit (see [`config`](crate::envoy::config)) is one limit of the request, counted in a
//! bucket of its own per distinct descriptor value. All enforced limits of a request are decided
//! in one all-or-nothing call: an over-limit answer debits nothing anywhere (for more than
//! [`MAX_LIMITS`] distinct limits, see [`RateLimitServer::decide`]). Descriptors in shadow or
//! quota mode are counted in a second call and never make the answer `OVER_LIMIT`: over their
//! limit they report `OK` with nothing remaining, as envoyproxy/ratelimit does. `hits_addend`
//! is each limit's cost: the request's, zero meaning one, or the descriptor's own, zero meaning
//! check only (debit nothing, `OVER_LIMIT` when the next request would be). Quota-mode limits
//! over their count are listed in the response's dynamic metadata (`quotaModeViolations`). A limit named in
//! another matched limit's `replaces` is not applied. A descriptor's own `limit` (Envoy's
//! override) applies to it in any configured domain, in a bucket of its own.
//!
//! The server and its settings are in this file; the parts of a decision beside it: the decision
//! of a request (`decide.rs`), the store calls (`enforce.rs`), a request's limits and its own
//! overrides (`merged.rs`) and the answer's statuses, headers and metadata (`answer.rs`).
//!
//! [`MAX_LIMITS`]: ratelimit_core::MAX_LIMITS

use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use parking_lot::RwLock;
use ratelimit_core::Limiter;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::envoy::config::{Config, ConfigError};
use crate::envoy::metrics::{self, DEFAULT_NEAR_LIMIT_RATIO, Metrics};
use crate::envoy::settings::HeaderNames;
use crate::status::LimitedKeys;

mod answer;
mod decide;
mod enforce;
mod merged;

/// The rate limit service: a configuration (replaceable while serving) and a limiter.
pub struct RateLimitServer {
    config: Arc<RwLock<Arc<Config>>>,
    limiter: Arc<Limiter>,
    /// Where limits per second are counted, if not in `limiter` (`REDIS_PERSECOND`).
    per_second: Option<Arc<Limiter>>,
    metrics: Arc<Metrics>,
    /// The descriptors denied most lately, for the status page.
    limited: Arc<LimitedKeys>,
    monitor: Option<Arc<ratelimit_anomaly::Monitor>>,
    /// `SHADOW_MODE`: decided as usual, never answered `OVER_LIMIT` overall.
    shadow_all: bool,
    /// `QUOTA_MODE`: every configured limit in quota mode.
    quota_all: bool,
    /// `LIMIT_RESPONSE_HEADERS_ENABLED`: the rate limit headers' names.
    headers: Option<HeaderNames>,
    near_limit_ratio: f64,
}

impl RateLimitServer {
    /// A service deciding with `limiter` under `config`, refusing a configuration with a limit
    /// the limiter's store cannot count ([`Config::check`]).
    pub fn try_new(config: Config, limiter: Arc<Limiter>) -> Result<Self, ConfigError> {
        config.check(limiter.store().as_ref())?;
        Ok(Self::new(config, limiter))
    }

    /// A service deciding with `limiter` under `config`, unchecked: a limit the store cannot
    /// count is then `OVER_LIMIT` on every request (see [`try_new`](Self::try_new)).
    pub fn new(config: Config, limiter: Arc<Limiter>) -> Self {
        RateLimitServer {
            config: Arc::new(RwLock::new(Arc::new(config))),
            limiter,
            per_second: None,
            metrics: Arc::new(Metrics::default()),
            limited: Arc::new(LimitedKeys::default()),
            monitor: None,
            shadow_all: false,
            quota_all: false,
            headers: None,
            near_limit_ratio: DEFAULT_NEAR_LIMIT_RATIO,
        }
    }

    /// Counts the limits whose unit is a second in `limiter` instead (envoyproxy/ratelimit's
    /// `REDIS_PERSECOND`: a second Redis for the hottest keys). A request with limits in both
    /// is peeked in both before either is debited, so a denial still debits nothing; only a
    /// race between the peek and the debit can leave one store debited, which under-admits.
    pub fn with_per_second(mut self, limiter: Arc<Limiter>) -> Self {
        self.per_second = Some(limiter);
        self
    }

    /// Global shadow mode (`SHADOW_MODE`): every request is decided and counted as usual, and
    /// the overall answer is `OK` even when a limit is over, as in envoyproxy/ratelimit; the
    /// descriptors' statuses still say which limit would have denied it.
    pub fn with_global_shadow_mode(mut self, on: bool) -> Self {
        self.shadow_all = on;
        self
    }

    /// Global quota mode (`QUOTA_MODE`): every configured limit is in quota mode (counted,
    /// listed in `quotaModeViolations`, never the reason for `OVER_LIMIT`). A request's own
    /// limit override stays enforced.
    pub fn with_global_quota_mode(mut self, on: bool) -> Self {
        self.quota_all = on;
        self
    }

    /// Adds the rate limit headers to every answer with a limit (`response_headers_to_add`),
    /// as envoyproxy/ratelimit's `LIMIT_RESPONSE_HEADERS_ENABLED`: the limit, what remains and
    /// the seconds until the bucket is full again, of the descriptor closest to its limit (an
    /// over-limit one first).
    pub fn with_response_headers(mut self, names: HeaderNames) -> Self {
        self.headers = Some(names);

        self
    }

    /// The same service with a near-limit ratio other than envoyproxy/ratelimit's default 0.8
    /// (its `NEAR_LIMIT_RATIO`): a rule's hits above `requests_per_unit` × `ratio` count as near
    /// its limit ([`metrics`]). Clamped to 0 to 1; not a number makes every hit near.
    pub fn with_near_limit_ratio(mut self, ratio: f64) -> Self {
        self.near_limit_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// The same service recording every request into `monitor` for anomaly detection: the value
    /// of a `remote_address` entry as the client, the domain as the route.
    pub fn with_monitor(mut self, monitor: Arc<ratelimit_anomaly::Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// The service's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The descriptors denied most lately (bounded), as the status page lists them.
    pub fn limited_keys(&self) -> Arc<LimitedKeys> {
        self.limited.clone()
    }

    /// The limiter (its store's health is the service's).
    pub fn limiter(&self) -> Arc<Limiter> {
        self.limiter.clone()
    }

    /// Where the configuration lives: replace it (say, after a reload) and the next request uses it.
    pub fn config_handle(&self) -> Arc<RwLock<Arc<Config>>> {
        self.config.clone()
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServer {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = std::time::Instant::now();
        let request = request.get_ref();
        // One span a call (exported where TRACING_ENABLED is set), with its domain, its size
        // and its outcome; descriptor values stay out of it, they are the clients'.
        let span = tracing::info_span!(
            "ShouldRateLimit",
            domain = %request.domain,
            descriptors = request.descriptors.len(),
            code = tracing::field::Empty,
        );
        let answer = self.decide(request).instrument(span.clone()).await;
        metrics::record_call(started.elapsed());
        match &answer {
            Ok(response) => {
                let code = Code::try_from(response.overall_code).unwrap_or(Code::Unknown);
                span.record("code", code.as_str_name());
            }
            Err(status) => {
                span.record("code", status.code().description());
                self.metrics.error();
            }
        }
        answer.map(Response::new)
    }
}

#[cfg(test)]
mod tests;
