//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) on a
//! ratelimit [`Limiter`]: Envoy, Istio or any Envoy-based gateway can use it unchanged.
//!
//! A request names a domain and carries descriptors; each descriptor that the configuration gives
//! a limit (see [`descriptors`](crate::descriptors)) is one limit of the request, counted in a
//! bucket of its own per distinct descriptor value. All enforced limits of a request are decided
//! in one all-or-nothing call: an over-limit answer debits nothing anywhere. Descriptors in shadow
//! mode are counted in a second call and reported as they are, but never make the answer
//! `OVER_LIMIT`. `hits_addend` (per request, or per descriptor) is each limit's cost, zero
//! meaning one.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit as PbRateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use parking_lot::RwLock;
use ratelimit_core::{Decision, Limit, Limiter};
use tonic::{Request, Response, Status};

use crate::descriptors::{Config, Entry, Matched, Unit};

/// The rate limit service: a configuration (replaceable while serving) and a limiter.
pub struct RateLimitServer {
    config: Arc<RwLock<Arc<Config>>>,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    monitor: Option<Arc<ratelimit_anomaly::Monitor>>,
}

/// What the service has answered, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    // Relaxed: independent counters, read for display only.
    ok: AtomicU64,
    over_limit: AtomicU64,
    shadow_over_limit: AtomicU64,
    errors: AtomicU64,
}

impl Metrics {
    /// The counters in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ratelimit_service_requests_total ShouldRateLimit calls by answer."
        );
        let _ = writeln!(out, "# TYPE ratelimit_service_requests_total counter");
        for (code, counter) in [
            ("ok", &self.ok),
            ("over_limit", &self.over_limit),
            ("error", &self.errors),
        ] {
            let _ = writeln!(
                out,
                "ratelimit_service_requests_total{{code=\"{code}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ratelimit_service_shadow_over_limit_total Descriptors in shadow mode that were over their limit."
        );
        let _ = writeln!(
            out,
            "# TYPE ratelimit_service_shadow_over_limit_total counter"
        );
        let _ = writeln!(
            out,
            "ratelimit_service_shadow_over_limit_total {}",
            self.shadow_over_limit.load(Ordering::Relaxed)
        );
        out
    }
}

impl RateLimitServer {
    /// A service deciding with `limiter` under `config`.
    pub fn new(config: Config, limiter: Arc<Limiter>) -> Self {
        RateLimitServer {
            config: Arc::new(RwLock::new(Arc::new(config))),
            limiter,
            metrics: Arc::new(Metrics::default()),
            monitor: None,
        }
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

    /// Decides one request.
    pub async fn decide(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        let config = self.config.read().clone();
        let request_hits = request.hits_addend.max(1);
        // Per descriptor: its match (if any) and its cost.
        let mut matched: Vec<Option<(Matched<'_>, u32)>> =
            Vec::with_capacity(request.descriptors.len());
        for descriptor in &request.descriptors {
            let entries = entries_of(descriptor);
            let hits = descriptor.hits_addend.as_ref().map_or(request_hits, |h| {
                u32::try_from(h.value).unwrap_or(u32::MAX).max(1)
            });
            matched.push(
                config
                    .limit_for(&request.domain, &entries)
                    .filter(|m| !m.rate_limit.unlimited)
                    .map(|m| (m, hits)),
            );
        }
        let mut policies = Vec::with_capacity(matched.len());
        for m in &matched {
            policies.push(match m {
                Some((m, _)) => Some(
                    m.rate_limit
                        .policy()
                        .map_err(|e| Status::internal(format!("limit of {}: {e}", m.bucket)))?,
                ),
                None => None,
            });
        }

        // A cost above a limit's burst can never be admitted: over limit without asking the store.
        let impossible: Vec<bool> = matched
            .iter()
            .zip(&policies)
            .map(|(m, p)| matches!((m, p), (Some((_, hits)), Some(p)) if *hits > p.burst()))
            .collect();
        let enforced =
            |i: usize| matched[i].as_ref().is_some_and(|(m, _)| !m.shadow_mode) && !impossible[i];
        let shadow =
            |i: usize| matched[i].as_ref().is_some_and(|(m, _)| m.shadow_mode) && !impossible[i];

        let decide = |select: &dyn Fn(usize) -> bool| {
            let mut positions = Vec::new();
            let mut limits = Vec::new();
            for (i, m) in matched.iter().enumerate() {
                if let (true, Some((m, hits)), Some(policy)) = (select(i), m, policies[i]) {
                    positions.push(i);
                    limits.push(Limit::new(&m.bucket, policy).with_cost(*hits));
                }
            }
            (positions, limits)
        };
        let (enforced_at, enforced_limits) = decide(&enforced);
        let (shadow_at, shadow_limits) = decide(&shadow);
        let mut decisions: Vec<Option<Decision>> = vec![None; matched.len()];
        // An enforced descriptor that can never pass makes the request over limit, unasked.
        let mut over = impossible
            .iter()
            .zip(&matched)
            .any(|(&never, m)| never && m.as_ref().is_some_and(|(m, _)| !m.shadow_mode));
        if !enforced_limits.is_empty() && !over {
            let verdict = self
                .limiter
                .acquire(&enforced_limits)
                .await
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            over = !verdict.is_allowed();
            for (position, decision) in enforced_at.iter().zip(verdict.decisions()) {
                decisions[*position] = Some(*decision);
            }
        }
        if !shadow_limits.is_empty() {
            let verdict = self
                .limiter
                .acquire(&shadow_limits)
                .await
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            for (position, decision) in shadow_at.iter().zip(verdict.decisions()) {
                decisions[*position] = Some(*decision);
                if !decision.is_allowed() {
                    self.metrics
                        .shadow_over_limit
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(descriptor = %matched[*position].as_ref().map_or("", |(m, _)| m.bucket.as_str()), "over limit in shadow mode");
                }
            }
        }
        let counter = if over {
            &self.metrics.over_limit
        } else {
            &self.metrics.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(monitor) = &self.monitor {
            let client = request
                .descriptors
                .iter()
                .flat_map(|d| &d.entries)
                .find(|e| e.key == "remote_address")
                .map(|e| e.value.as_str());
            monitor.record(&ratelimit_anomaly::RequestEvent {
                client,
                api_key: None,
                route: Some(&request.domain),
                limited: over,
            });
        }

        let statuses = matched
            .iter()
            .enumerate()
            .map(|(i, m)| status_of(m.as_ref().map(|(m, _)| m), decisions[i], impossible[i]))
            .collect();
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..RateLimitResponse::default()
        })
    }
}

fn entries_of(descriptor: &RateLimitDescriptor) -> Vec<Entry> {
    descriptor
        .entries
        .iter()
        .map(|e| Entry::new(&e.key, &e.value))
        .collect()
}

/// A descriptor's status as Envoy expects it: its code, the limit that applied, what is left and
/// when the bucket is full again. Descriptors with no limit are `OK` with no limit.
fn status_of(
    matched: Option<&Matched<'_>>,
    decision: Option<Decision>,
    impossible: bool,
) -> DescriptorStatus {
    let Some(m) = matched else {
        return DescriptorStatus {
            code: Code::Ok as i32,
            ..DescriptorStatus::default()
        };
    };
    let current_limit = Some(PbRateLimit {
        name: m.rate_limit.name.clone().unwrap_or_default(),
        requests_per_unit: m.rate_limit.requests_per_unit,
        unit: pb_unit(m.rate_limit.unit) as i32,
    });
    let over = impossible || decision.is_some_and(|d| !d.is_allowed());
    DescriptorStatus {
        // A shadow-mode descriptor is reported as it is: Envoy ignores its code for the verdict
        // only because the overall code says OK.
        code: if over { Code::OverLimit } else { Code::Ok } as i32,
        current_limit,
        limit_remaining: decision.map_or(0, |d| d.remaining()),
        duration_until_reset: decision.map(|d| pb_duration(d.reset_after())),
        ..DescriptorStatus::default()
    }
}

fn pb_unit(unit: Unit) -> PbUnit {
    match unit {
        Unit::Second => PbUnit::Second,
        Unit::Minute => PbUnit::Minute,
        Unit::Hour => PbUnit::Hour,
        Unit::Day => PbUnit::Day,
        Unit::Week => PbUnit::Week,
        Unit::Month => PbUnit::Month,
        Unit::Year => PbUnit::Year,
    }
}

fn pb_duration(duration: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServer {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let answer = self.decide(request.get_ref()).await;
        if answer.is_err() {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        answer.map(Response::new)
    }
}
