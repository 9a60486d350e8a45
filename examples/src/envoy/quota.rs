//! The rate limit quota service (RLQS, `envoy.service.rate_limit_quota.v3`): Envoy's
//! `rate_limit_quota` filter reports, per bucket, how many requests it allowed and denied, and
//! gets back a token bucket to enforce in the proxy itself, with no call per request.
//!
//! # Buckets and rules
//! A report names a domain and, per bucket, a `BucketId`: a map of names to values, built by
//! the filter's `bucket_id_builder`. The bucket is looked up as a request descriptor of that
//! domain whose entries are the map's pairs **sorted by name** (a map has no order of its own):
//! `{name: api, tenant: acme}` is the descriptor `name=api, tenant=acme`, matched by the same
//! descriptor YAML as `ShouldRateLimit` ([`Config::limit_for`]). A bucket no rule matches, or
//! one whose rule is `unlimited`, gets `ALLOW_ALL`; a rule of zero gets `DENY_ALL`.
//!
//! # Shares
//! A rule's rate is split among the proxies that report the bucket, in proportion to what each
//! asked for in its last report (allowed plus denied, per second), with a small floor so that a
//! quiet proxy can still start. Each proxy's token bucket gets its share of the rate and of the
//! burst; the shares of one bucket sum to one, so the rates handed out sum to the rule's rate
//! divided by the replicas of this service (`--replicas`), each of which hands out its part. A
//! report that changes the shares sends every other proxy of the bucket its new assignment at
//! once; assignments live `assignment_time_to_live` (twice the reporting interval Envoy is
//! expected to use), after which Envoy falls back to its configured behaviour.
//!
//! # The shared store
//! With [`QuotaServer::with_store`], each report's allowed requests are debited from the rule's
//! bucket in the store, the one `ShouldRateLimit` decides in, so callers of either service draw
//! from one budget. A debit the store refuses means the rule was used elsewhere: the bucket's
//! assignments are halved (down to 1/64), and doubled back with each debit it accepts. Proxies
//! alone keep the bound below; shared with `ShouldRateLimit` callers, what the proxies admitted
//! before a refusal is over the store's bound by at most what their assignments gave in one
//! reporting interval.
//!
//! # The bound
//! Admitted over any window `w`, across all proxies: at most the sum of their buckets' sizes
//! plus the sum of their rates times `w`, that is `burst + rate × w` of the rule, plus one token
//! per proxy (each bucket holds at least one) and what proxies whose assignment is being
//! replaced still hold of the old one (at most one old bucket each, for one time to live).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::r#type::v3::rate_limit_strategy::{BlanketRule, Strategy};
use envoy_types::pb::envoy::r#type::v3::{RateLimitStrategy, TokenBucket};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::BucketAction;
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::bucket_action::{
    BucketAction as Action, QuotaAssignmentAction,
};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_server::{
    RateLimitQuotaService, RateLimitQuotaServiceServer,
};
use envoy_types::pb::envoy::service::rate_limit_quota::v3::{
    BucketId, RateLimitQuotaResponse, RateLimitQuotaUsageReports,
};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use ratelimit_core::{Limit, Limiter};

use super::config::{Config, Entry, RateLimit};

/// How many replicas of this service share the rules: a setting, or a live count.
type ReplicaCount = Arc<dyn Fn() -> u32 + Send + Sync>;

/// How long an assignment lives unless renewed.
pub const DEFAULT_ASSIGNMENT_TTL: Duration = Duration::from_secs(10);

/// A proxy that reports nothing for this long has left the bucket's share.
const FORGET_AFTER_TTLS: u32 = 3;

/// The RLQS server: the same configuration as `ShouldRateLimit`, shares per bucket.
pub struct QuotaServer {
    config: Arc<RwLock<Arc<Config>>>,
    replicas: ReplicaCount,
    /// Where the proxies' usage is debited, so that they and `ShouldRateLimit` share a rule.
    limiter: Option<Arc<Limiter>>,
    ttl: Duration,
    state: Arc<Mutex<State>>,
}

/// Who reports which bucket, and how to reach them.
#[derive(Default)]
struct State {
    next_stream: u64,
    /// Per bucket (domain and sorted entries): each stream's demand and when it reported.
    buckets: HashMap<BucketKey, HashMap<u64, Demand>>,
    /// Per bucket: the part of the rule's rate handed out, halved while the store refuses the
    /// proxies' usage (others used the rule too), restored as it accepts it again.
    scales: HashMap<BucketKey, f64>,
    /// Per stream: where its responses go.
    streams: HashMap<u64, mpsc::Sender<Result<RateLimitQuotaResponse, Status>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    domain: String,
    entries: Vec<(String, String)>,
}

#[derive(Clone, Copy)]
struct Demand {
    per_second: f64,
    at: tokio::time::Instant,
}

impl QuotaServer {
    /// A server handing out shares of the limits in `config` (the `ShouldRateLimit` service's
    /// handle, so a reload applies to both), as one of `replicas` replicas.
    pub fn new(config: Arc<RwLock<Arc<Config>>>, replicas: u32) -> Self {
        QuotaServer {
            config,
            replicas: Arc::new(move || replicas.max(1)),
            limiter: None,
            ttl: DEFAULT_ASSIGNMENT_TTL,
            state: Arc::default(),
        }
    }

    /// Splits over the count `replicas` gives at each assignment instead (say,
    /// [`Limiter::replicas`](ratelimit_core::Limiter::replicas), which follows a
    /// [`Membership`](ratelimit_core::Membership)); a count of zero is taken as one.
    pub fn with_replica_count(
        mut self,
        replicas: impl Fn() -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.replicas = Arc::new(move || replicas().max(1));
        self
    }

    /// Folds the proxies' usage back into `limiter`'s store: each report's allowed requests are
    /// debited from the rule's bucket (the one `ShouldRateLimit` counts in), so callers of both
    /// services share the rule. A debit the store refuses (the rule was used elsewhere) halves
    /// the rate handed out for that bucket; each debit it accepts doubles it back, up to the
    /// whole share.
    pub fn with_store(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Assignments live `ttl` (default [`DEFAULT_ASSIGNMENT_TTL`]).
    pub fn with_assignment_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> RateLimitQuotaServiceServer<Self> {
        RateLimitQuotaServiceServer::new(self)
    }
}

/// The entries of a bucket: its map's pairs, sorted by name.
fn entries_of(id: &BucketId) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = id
        .bucket
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    entries.sort();
    entries
}

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The token bucket for a `share` of `rule` (split over `replicas`): rate and size scaled by
/// the share, the size at least one token; the fill interval is rounded up, so the rate handed
/// out never exceeds the share.
fn token_bucket(rule: &RateLimit, share: f64, replicas: u32) -> TokenBucket {
    let part = share / f64::from(replicas);
    let per_unit = f64::from(rule.requests_per_unit) * part;
    // Whole tokens per fill: at least one, then the interval that gives exactly the share.
    let tokens = per_unit.floor().max(1.0);
    let unit = rule.unit.duration().as_secs_f64();
    let interval = Duration::from_secs_f64(unit * tokens / per_unit.max(f64::MIN_POSITIVE));
    let interval = interval + Duration::from_nanos(1);
    TokenBucket {
        // u32 tokens: the share of a u32 count, floored, fits.
        max_tokens: (f64::from(rule.requests_per_unit) * part).floor().max(1.0) as u32,
        tokens_per_fill: Some(UInt32Value {
            value: tokens as u32,
        }),
        fill_interval: Some(pb_duration(interval)),
    }
}

impl QuotaServer {
    /// The action for `key` as seen by `stream`, given the bucket's demands.
    fn action(
        &self,
        key: &BucketKey,
        id: &BucketId,
        demands: &HashMap<u64, Demand>,
        stream: u64,
        scale: f64,
    ) -> BucketAction {
        let config = self.config.read().clone();
        let entries: Vec<Entry> = key.entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
        let rule = config
            .limit_for(&key.domain, &entries)
            .map(|m| m.rate_limit.into_owned());
        let strategy = match rule {
            None => Strategy::BlanketRule(BlanketRule::AllowAll as i32),
            Some(rule) if rule.unlimited => Strategy::BlanketRule(BlanketRule::AllowAll as i32),
            Some(rule) if rule.requests_per_unit == 0 => {
                Strategy::BlanketRule(BlanketRule::DenyAll as i32)
            }
            Some(rule) => Strategy::TokenBucket(token_bucket(
                &rule,
                share(demands, stream) * scale,
                (self.replicas)(),
            )),
        };
        BucketAction {
            bucket_id: Some(id.clone()),
            bucket_action: Some(Action::QuotaAssignmentAction(QuotaAssignmentAction {
                assignment_time_to_live: Some(pb_duration(self.ttl)),
                rate_limit_strategy: Some(RateLimitStrategy {
                    strategy: Some(strategy),
                }),
            })),
        }
    }

    /// Folds one report of `stream` in: its demand per bucket, then the new assignments, to it
    /// for every bucket it reported and to the bucket's other proxies whose share changed.
    async fn report(&self, stream: u64, reports: &RateLimitQuotaUsageReports) {
        // First the store: what each bucket's debit says of the rule's use elsewhere.
        let mut verdicts: HashMap<BucketKey, bool> = HashMap::new();
        if let Some(limiter) = &self.limiter {
            let config = self.config.read().clone();
            for usage in &reports.bucket_quota_usages {
                let Some(id) = &usage.bucket_id else { continue };
                let key = BucketKey {
                    domain: reports.domain.clone(),
                    entries: entries_of(id),
                };
                let entries: Vec<Entry> =
                    key.entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
                let Some(matched) = config.limit_for(&key.domain, &entries) else {
                    continue;
                };
                let (Ok(policy), Ok(allowed)) = (
                    matched.rate_limit.policy(),
                    u32::try_from(usage.num_requests_allowed),
                ) else {
                    continue;
                };
                if allowed == 0 || matched.rate_limit.unlimited {
                    continue;
                }
                // More than a burst at once cannot be debited: the burst stands for it.
                let cost = allowed.min(policy.burst());
                let limit = Limit::new(&matched.bucket, policy).with_cost(cost);
                let accepted = limiter
                    .acquire(&[limit])
                    .await
                    .is_ok_and(|verdict| verdict.is_allowed());
                verdicts.insert(key, accepted);
            }
        }
        let now = tokio::time::Instant::now();
        let forget = self.ttl * FORGET_AFTER_TTLS;
        let mut state = self.state.lock();
        for (key, accepted) in verdicts {
            let scale = state.scales.entry(key).or_insert(1.0);
            *scale = if accepted {
                (*scale * 2.0).min(1.0)
            } else {
                (*scale / 2.0).max(1.0 / 64.0)
            };
        }
        let mut outgoing: HashMap<u64, Vec<BucketAction>> = HashMap::new();
        for usage in &reports.bucket_quota_usages {
            let Some(id) = &usage.bucket_id else { continue };
            let elapsed = usage.time_elapsed.as_ref().map_or(0.0, |d| {
                d.seconds.max(0) as f64 + f64::from(d.nanos.max(0)) / 1e9
            });
            let asked = usage
                .num_requests_allowed
                .saturating_add(usage.num_requests_denied);
            // No elapsed time: the first report of a bucket; what it asked counts as a second's.
            let per_second = asked as f64 / if elapsed > 0.0 { elapsed } else { 1.0 };
            let key = BucketKey {
                domain: reports.domain.clone(),
                entries: entries_of(id),
            };
            let demands = state.buckets.entry(key.clone()).or_default();
            demands.retain(|_, d| now.duration_since(d.at) < forget);
            demands.insert(
                stream,
                Demand {
                    per_second,
                    at: now,
                },
            );
            let demands = demands.clone();
            let scale = state.scales.get(&key).copied().unwrap_or(1.0);
            for &other in demands.keys() {
                outgoing
                    .entry(other)
                    .or_default()
                    .push(self.action(&key, id, &demands, other, scale));
            }
        }
        for (to, actions) in outgoing {
            if let Some(sender) = state.streams.get(&to) {
                // A full or closed stream misses this assignment and gets the next one; the
                // proxy keeps its old one until its time to live ends.
                let _ = sender.try_send(Ok(RateLimitQuotaResponse {
                    bucket_action: actions,
                }));
            }
        }
    }
}

/// `stream`'s share of a bucket: its demand over the total, each demand floored at a twentieth
/// of the mean, so that a proxy that asked for nothing yet still gets a little.
fn share(demands: &HashMap<u64, Demand>, stream: u64) -> f64 {
    let n = demands.len().max(1) as f64;
    let total: f64 = demands.values().map(|d| d.per_second).sum();
    let floor = (total / n).max(1.0) * 0.05;
    let mine = demands.get(&stream).map_or(0.0, |d| d.per_second) + floor;
    mine / (total + floor * n)
}

type Responses = Pin<Box<dyn Stream<Item = Result<RateLimitQuotaResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RateLimitQuotaService for QuotaServer {
    type StreamRateLimitQuotasStream = Responses;

    async fn stream_rate_limit_quotas(
        &self,
        request: Request<Streaming<RateLimitQuotaUsageReports>>,
    ) -> Result<Response<Responses>, Status> {
        let mut reports = request.into_inner();
        let (sender, receiver) = mpsc::channel(64);
        let stream = {
            let mut state = self.state.lock();
            state.next_stream += 1;
            let id = state.next_stream;
            state.streams.insert(id, sender);
            id
        };
        let server = QuotaServer {
            config: self.config.clone(),
            replicas: self.replicas.clone(),
            ttl: self.ttl,
            limiter: self.limiter.clone(),
            state: self.state.clone(),
        };
        tokio::spawn(async move {
            while let Ok(Some(report)) = reports.message().await {
                server.report(stream, &report).await;
            }
            // The proxy left: its share goes back to the others at their next report.
            let mut state = server.state.lock();
            state.streams.remove(&stream);
            for demands in state.buckets.values_mut() {
                demands.remove(&stream);
            }
            state.buckets.retain(|_, d| !d.is_empty());
            let State {
                buckets, scales, ..
            } = &mut *state;
            scales.retain(|key, _| buckets.contains_key(key));
        });
        let responses = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(responses)))
    }
}
