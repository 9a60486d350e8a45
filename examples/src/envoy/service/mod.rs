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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit as PbRateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, ListValue, Struct as PbStruct, Value as PbValue,
};
use parking_lot::RwLock;
use ratelimit_core::{BucketKey, Decision, Limit, Limiter, MAX_LIMITS, Policy};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::config::{Config, ConfigError, Entry, Matched, RateLimit, StatKey, Unit};
use super::metrics::{self, DEFAULT_NEAR_LIMIT_RATIO, Metrics, RuleHits};
use super::settings::HeaderNames;

/// The rate limit service: a configuration (replaceable while serving) and a limiter.
pub struct RateLimitServer {
    config: Arc<RwLock<Arc<Config>>>,
    limiter: Arc<Limiter>,
    /// Where limits per second are counted, if not in `limiter` (`REDIS_PERSECOND`).
    per_second: Option<Arc<Limiter>>,
    metrics: Arc<Metrics>,
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
    ///
    /// Every request Envoy can send gets a decision, because Envoy admits a request on any error
    /// from this service unless `failure_mode_deny` is set. Only a request that names nothing to
    /// decide (an empty domain, no descriptors, a descriptor without entries) is an error,
    /// `INVALID_ARGUMENT`. Everything else is `OK` or `OVER_LIMIT`:
    ///
    /// - a value of any length has a bucket of bounded length (see [`Matched`]);
    /// - descriptors that name the same bucket are one limit whose cost is the sum of theirs
    ///   (saturating): the bucket is debited once per descriptor, as envoyproxy/ratelimit does;
    /// - a cost above a limit's burst (a huge `hits_addend`, or many repeats) is `OVER_LIMIT`;
    /// - more distinct limits than one store call decides ([`MAX_LIMITS`]) are decided in chunks
    ///   of [`MAX_LIMITS`]: every chunk is peeked first, and a request any chunk would deny is
    ///   denied with nothing debited; then the chunks are debited in turn, and one that denies
    ///   after all (a race between the peek and the debit) leaves the earlier chunks debited,
    ///   which under-admits and never over-admits;
    /// - an invalid request that the checks above missed
    ///   ([`RequestError`](ratelimit_core::RequestError)) is `OVER_LIMIT`: failing closed never
    ///   admits more than the bound.
    pub async fn decide(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        if request.domain.is_empty() {
            return Err(Status::invalid_argument("domain: must not be empty"));
        }
        if request.descriptors.is_empty() {
            return Err(Status::invalid_argument("descriptors: must not be empty"));
        }
        if let Some(at) = request
            .descriptors
            .iter()
            .position(|d| d.entries.is_empty())
        {
            return Err(Status::invalid_argument(format!(
                "descriptors[{at}]: a descriptor must have at least one entry"
            )));
        }
        let config = self.config.read().clone();
        // Zero means one for the request's own addend, as Envoy sends it; a descriptor's own
        // addend of zero only checks (consumes nothing), as in envoyproxy/ratelimit. Costs are
        // u64 from here on, so that no addend is truncated (2^32 + 5 is not 5) and no sum
        // overflows.
        let request_hits = u64::from(request.hits_addend.max(1));
        let known_domain = config.has_domain(&request.domain);
        let found: Vec<(Option<Matched<'_>>, u64)> = request
            .descriptors
            .iter()
            .map(|descriptor| {
                let hits = descriptor
                    .hits_addend
                    .as_ref()
                    .map_or(request_hits, |h| h.value);
                let matched = match &descriptor.limit {
                    // The request's own limit replaces the configuration's for this
                    // descriptor, even where no rule matches; in a known domain only, as in
                    // envoyproxy/ratelimit.
                    Some(own) if known_domain => {
                        Some(override_of(&request.domain, descriptor, own))
                    }
                    Some(_) => None,
                    None => config
                        .limit_for(&request.domain, &entries_of(descriptor))
                        .map(|mut m| {
                            m.quota_mode |= self.quota_all;
                            m
                        }),
                };
                (matched, hits)
            })
            .collect();
        // A matched limit named in another matched limit's `replaces` does not apply to this
        // request: neither checked nor debited (envoyproxy/ratelimit's constructLimitsToCheck,
        // where unlimited limits replace too).
        let replaced: HashSet<String> = found
            .iter()
            .filter_map(|(m, _)| m.as_ref())
            .flat_map(|m| m.rate_limit.replaces.iter().cloned())
            .collect();
        let mut limits: Vec<Merged<'_>> = Vec::new();
        let mut by_bucket: HashMap<String, usize> = HashMap::new();
        // Per descriptor: what it counts in.
        let mut slot_of: Vec<Slot> = Vec::with_capacity(request.descriptors.len());
        // Per descriptor with a limit, in request order: the limit, its hits and its rule's
        // statistics key (taken out of the match, which needs it no more).
        let mut rule_hits: Vec<(usize, u64, StatKey)> = Vec::with_capacity(slot_of.capacity());
        for (matched, hits) in found {
            let Some(mut matched) = matched else {
                slot_of.push(Slot::None);
                continue;
            };
            if matched
                .rate_limit
                .name
                .as_ref()
                .is_some_and(|name| replaced.contains(name))
            {
                slot_of.push(Slot::None);
                continue;
            }
            if matched.rate_limit.unlimited {
                slot_of.push(Slot::Unlimited);
                continue;
            }
            let stat_key = std::mem::take(&mut matched.stat_key);
            let at = match by_bucket.get(&matched.bucket) {
                Some(&at) => at,
                None => {
                    by_bucket.insert(matched.bucket.clone(), limits.len());
                    limits.push(Merged {
                        // A limit of zero has no policy and admits nothing; any other policy
                        // was checked when the configuration loaded, and one that still cannot
                        // be built makes the limit one that never admits (fail closed).
                        policy: matched.rate_limit.policy().ok(),
                        matched,
                        cost: 0,
                        decision: None,
                        never: false,
                    });
                    limits.len() - 1
                }
            };
            limits[at].cost = limits[at].cost.saturating_add(hits);
            slot_of.push(Slot::Limit(at));
            rule_hits.push((at, hits, stat_key));
        }
        for limit in &mut limits {
            // A cost above the burst can never be admitted: over limit without a debit.
            limit.never = limit
                .policy
                .is_none_or(|p| limit.cost > u64::from(p.burst()));
        }

        let mut over = limits.iter().any(|l| l.never && !l.is_soft());
        // The limits whose descriptors only check (cost 0) are peeked before anything is
        // debited: one that has no room denies the request with nothing debited anywhere.
        let checks: Vec<usize> = (0..limits.len())
            .filter(|&i| !limits[i].is_soft() && !limits[i].never && limits[i].cost == 0)
            .collect();
        for chunk in self.chunks(&limits, &checks) {
            if over {
                break;
            }
            over = !self.call(&mut limits, &chunk, Call::Peek).await;
        }
        let enforced: Vec<usize> = (0..limits.len())
            .filter(|&i| !limits[i].is_soft() && !limits[i].never && limits[i].cost > 0)
            .collect();
        if !over && !enforced.is_empty() {
            over = !self.enforce(&mut limits, &enforced).await;
        }
        for check_only in [false, true] {
            let soft: Vec<usize> = (0..limits.len())
                .filter(|&i| {
                    limits[i].is_soft() && !limits[i].never && (limits[i].cost == 0) == check_only
                })
                .collect();
            let call = if check_only { Call::Peek } else { Call::Shadow };
            for chunk in self.chunks(&limits, &soft) {
                // Shadow and quota-mode limits are counted, never enforced: each chunk is
                // decided on its own.
                self.call(&mut limits, &chunk, call).await;
            }
        }
        // A limit over without a store decision (its cost exceeds it) still reports when its
        // bucket is full again: peeked for that alone, at the cost of one request.
        let never: Vec<usize> = (0..limits.len())
            .filter(|&i| limits[i].never && limits[i].policy.is_some())
            .collect();
        for chunk in self.chunks(&limits, &never) {
            self.call(&mut limits, &chunk, Call::Peek).await;
        }
        for limit in limits.iter().filter(|l| l.is_soft()) {
            if limit.is_over() {
                self.metrics.shadow_over_limit();
                tracing::info!(descriptor = %limit.matched.field, "over limit in shadow or quota mode");
            }
        }

        self.record_rules(&limits, &rule_hits);
        self.metrics.answered(over);
        if let Some(monitor) = &self.monitor {
            let client = request
                .descriptors
                .iter()
                .flat_map(|d| &d.entries)
                .find(|e| e.key == "remote_address")
                // A client names itself: its name's size must not be the monitor's.
                .map(|e| ratelimit_core::key::bounded(&e.value));
            monitor.record(&ratelimit_anomaly::RequestEvent {
                client: client.as_deref(),
                api_key: None,
                route: Some(&request.domain),
                limited: over,
            });
        }

        let statuses: Vec<DescriptorStatus> = slot_of
            .iter()
            .map(|slot| status_of(slot, &limits))
            .collect();
        let response_headers_to_add = self
            .headers
            .as_ref()
            .map(|names| rate_limit_headers(names, &statuses))
            .unwrap_or_default();
        if over && self.shadow_all {
            tracing::info!(domain = %request.domain, "over limit in global shadow mode");
        }
        Ok(RateLimitResponse {
            overall_code: if over && !self.shadow_all {
                Code::OverLimit
            } else {
                Code::Ok
            } as i32,
            statuses,
            dynamic_metadata: quota_metadata(&slot_of, &limits),
            response_headers_to_add,
            ..RateLimitResponse::default()
        })
    }

    /// envoyproxy/ratelimit's per-rule statistics of a decided request: each descriptor's hits
    /// on its rule, split as its base limiter splits them ([`RuleHits::split`]). Its count is a
    /// fixed window's, incremented by every descriptor in request order; here a limit's count
    /// before the request is what its bucket had used (its capacity less the room its decision
    /// saw), and the descriptors that share a limit follow one another from there, as they
    /// would in envoyproxy/ratelimit's window.
    fn record_rules(&self, limits: &[Merged<'_>], rule_hits: &[(usize, u64, StatKey)]) {
        let mut used: Vec<u64> = limits.iter().map(Merged::used_before).collect();
        for (at, hits, stat_key) in rule_hits {
            let limit = &limits[*at];
            let requests_per_unit = limit.matched.rate_limit.requests_per_unit;
            let near = metrics::near_threshold(requests_per_unit, self.near_limit_ratio);
            let split = RuleHits::split(
                u64::from(requests_per_unit),
                near,
                used[*at],
                *hits,
                limit.matched.shadow_mode,
            );
            used[*at] = used[*at].saturating_add(*hits);
            metrics::record_rule(stat_key, &split);
        }
    }

    /// Decides the enforced limits `at` of `limits`; whether the request is admitted.
    ///
    /// Up to [`MAX_LIMITS`] limits are one all-or-nothing store call. More are decided in chunks
    /// of [`MAX_LIMITS`]: first every chunk is peeked, and a request that any chunk would deny is
    /// denied with nothing debited; then the chunks are debited in turn, and a chunk that denies
    /// after all (a race with another request between the peek and the debit) stops the request
    /// with the earlier chunks debited. That can only under-admit: no limit is ever debited past
    /// its bound, and a debited chunk only leaves less for later requests.
    async fn enforce(&self, limits: &mut [Merged<'_>], at: &[usize]) -> bool {
        let chunks = self.chunks(limits, at);
        if chunks.len() > 1 {
            let mut all = true;
            for chunk in &chunks {
                all &= self.call(limits, chunk, Call::Peek).await;
            }
            if !all {
                return false;
            }
        }
        for chunk in &chunks {
            if !self.call(limits, chunk, Call::Acquire).await {
                return false;
            }
        }
        true
    }

    /// The limits `at` in groups that one store call decides: by store (the per-second one or
    /// the main one), then at most [`MAX_LIMITS`] a call.
    fn chunks(&self, limits: &[Merged<'_>], at: &[usize]) -> Vec<Vec<usize>> {
        let (fast, main): (Vec<usize>, Vec<usize>) =
            at.iter().partition(|&&i| self.is_per_second(&limits[i]));
        [fast, main]
            .iter()
            .flat_map(|group| group.chunks(MAX_LIMITS).map(<[usize]>::to_vec))
            .collect()
    }

    fn is_per_second(&self, limit: &Merged<'_>) -> bool {
        self.per_second.is_some() && limit.matched.rate_limit.unit == Unit::Second
    }

    /// One store call for the limits `chunk` of `limits`, all-or-nothing; whether it admitted.
    /// Each limit gets its decision; a limit the limiter refused as invalid becomes `never`.
    async fn call(&self, limits: &mut [Merged<'_>], chunk: &[usize], call: Call) -> bool {
        let (asked_at, answer) = {
            // The keys borrow from `limits`: ask first, write the decisions afterwards.
            let (asked_at, asked): (Vec<usize>, Vec<Limit<'_>>) = chunk
                .iter()
                .filter_map(|&i| Some((i, limits[i].limit()?)))
                .unzip();
            // A chunk is of one store (see `chunks`).
            let limiter = match (&self.per_second, chunk.first()) {
                (Some(fast), Some(&i)) if self.is_per_second(&limits[i]) => fast,
                _ => &self.limiter,
            };
            let answer = match call {
                Call::Peek => limiter.peek(&asked).await,
                Call::Acquire | Call::Shadow => limiter.acquire(&asked).await,
            };
            (
                asked_at,
                answer.map(|v| (v.is_allowed(), v.decisions().to_vec(), v.degraded_by())),
            )
        };
        match answer {
            Ok((allowed, decisions, degraded_by)) => {
                if let Some(failure) = degraded_by {
                    // The store failed (or was skipped after failing): the failure policy
                    // decided this call.
                    metrics::record_store_error(failure);
                }
                for (&i, decision) in asked_at.iter().zip(decisions) {
                    limits[i].decision = Some(decision);
                }
                allowed && asked_at.len() == chunk.len()
            }
            Err(error) => {
                // An invalid request reached the limiter after all: over limit (fail closed),
                // never an error status that Envoy would admit.
                self.metrics.refused();
                tracing::warn!(%error, "an invalid request reached the limiter; answered OVER_LIMIT");
                for &i in chunk {
                    limits[i].never = true;
                }
                false
            }
        }
    }
}

/// What a store call is for.
#[derive(Clone, Copy)]
enum Call {
    /// Would the limits admit? Debits nothing.
    Peek,
    /// Debit enforced limits.
    Acquire,
    /// Debit shadow limits (counted, never enforced).
    Shadow,
}

/// One limit of a request: the descriptors of the request that name its bucket, merged.
struct Merged<'c> {
    matched: Matched<'c>,
    /// `None` only for a limit the configuration check should have refused: never admits.
    policy: Option<Policy>,
    /// The sum of the descriptors' costs, saturating.
    cost: u64,
    decision: Option<Decision>,
    /// Over limit without a store decision: the cost exceeds the burst, or the limiter refused it.
    never: bool,
}

impl Merged<'_> {
    /// The limit to ask the store: `None` for a limit without a policy or with a cost that
    /// does not fit a u32 (both are `never`, and only peeked). A limit that only checks (cost
    /// 0), or can never be admitted, is peeked at the cost of one request: would the next
    /// request have room, and when is the bucket full again.
    fn limit(&self) -> Option<Limit<'_>> {
        let cost = if self.cost == 0 || self.never {
            1
        } else {
            u32::try_from(self.cost).ok()?
        };
        Some(Limit::new(&self.matched.bucket, self.policy?).with_cost(cost))
    }

    /// What the store was asked to count: the cost, or one for a peek (see [`limit`](Self::limit)).
    fn asked(&self) -> u64 {
        if self.cost == 0 || self.never {
            1
        } else {
            self.cost
        }
    }

    /// How much of the limit was in use before this request: its count less the room its
    /// decision saw (a decision that admitted had room for what was asked, and tells what is
    /// left after it; one that denied tells the room there was). No decision (a limit of zero,
    /// or one the limiter refused): nothing in use.
    fn used_before(&self) -> u64 {
        let capacity = u64::from(self.matched.rate_limit.requests_per_unit);
        let room = match self.decision {
            Some(d) if d.is_allowed() => u64::from(d.remaining()).saturating_add(self.asked()),
            Some(d) => u64::from(d.remaining()),
            None => 0,
        };
        capacity.saturating_sub(room)
    }

    fn is_over(&self) -> bool {
        self.never || self.decision.is_some_and(|d| !d.is_allowed())
    }

    /// Shadow or quota mode: counted and reported, never the reason for `OVER_LIMIT`.
    fn is_soft(&self) -> bool {
        self.matched.shadow_mode || self.matched.quota_mode
    }
}

/// What a request's descriptor counts in.
#[derive(Clone, Copy)]
enum Slot {
    /// No limit (none matched, or it was replaced).
    None,
    /// An unlimited limit: `OK`, with everything remaining.
    Unlimited,
    /// The limit at this index of the request's merged limits.
    Limit(usize),
}

/// The limit a request brought for one descriptor (`RateLimitDescriptor.limit`), counted in a
/// bucket of its own: the descriptor's entries and then the override itself as one more part, so
/// that its part count is odd and no configured rule's bucket (key and value pairs) can be it,
/// and a different override is a different bucket. A unit Envoy does not know makes a limit
/// that admits nothing (failing closed; envoyproxy/ratelimit cannot count it either).
fn override_of(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    own: &RateLimitOverride,
) -> Matched<'static> {
    let unit = match PbUnit::try_from(own.unit) {
        Ok(PbUnit::Second) => Some(Unit::Second),
        Ok(PbUnit::Minute) => Some(Unit::Minute),
        Ok(PbUnit::Hour) => Some(Unit::Hour),
        Ok(PbUnit::Day) => Some(Unit::Day),
        Ok(PbUnit::Week) => Some(Unit::Week),
        Ok(PbUnit::Month) => Some(Unit::Month),
        Ok(PbUnit::Year) => Some(Unit::Year),
        Ok(PbUnit::Unknown) | Err(_) => None,
    };
    let mut bucket = BucketKey::new(domain);
    // envoyproxy/ratelimit's key of a request's own limit: every entry, `key_value` (`key` for an
    // empty value).
    let mut stat_key = StatKey::new(domain);
    for entry in &descriptor.entries {
        bucket.push(&entry.key);
        bucket.push(&entry.value);
        stat_key.push(
            &entry.key,
            Some(entry.value.as_str()).filter(|v| !v.is_empty()),
        );
    }
    bucket.push(&format!(
        "limit override: {} per {}",
        own.requests_per_unit, own.unit
    ));
    Matched {
        rate_limit: Cow::Owned(RateLimit {
            requests_per_unit: if unit.is_some() {
                own.requests_per_unit
            } else {
                0
            },
            unit: unit.unwrap_or(Unit::Second),
            unlimited: false,
            name: None,
            replaces: Vec::new(),
        }),
        // As in envoyproxy/ratelimit: the request's own limit is always enforced.
        shadow_mode: false,
        quota_mode: false,
        bucket: bucket.finish(),
        field: "limit override".into(),
        stat_key,
    }
}

fn entries_of(descriptor: &RateLimitDescriptor) -> Vec<Entry> {
    descriptor
        .entries
        .iter()
        .map(|e| Entry::new(&e.key, &e.value))
        .collect()
}

/// A descriptor's status as envoyproxy/ratelimit reports it: its code, the limit that applied,
/// what is left and when the bucket is full again. No limit: `OK` with no limit. Unlimited: `OK`
/// with no limit and `u32::MAX` remaining. Over the limit: nothing remaining; in shadow or
/// quota mode the code is still `OK`, so that Envoy, which reads the statuses as well as the
/// overall code, never limits on it. A limit of zero is full again after one unit.
fn status_of(slot: &Slot, limits: &[Merged<'_>]) -> DescriptorStatus {
    let limit = match *slot {
        Slot::None => {
            return DescriptorStatus {
                code: Code::Ok as i32,
                ..DescriptorStatus::default()
            };
        }
        Slot::Unlimited => {
            return DescriptorStatus {
                code: Code::Ok as i32,
                limit_remaining: u32::MAX,
                ..DescriptorStatus::default()
            };
        }
        Slot::Limit(at) => &limits[at],
    };
    let m = &limit.matched;
    let current_limit = Some(PbRateLimit {
        name: m.rate_limit.name.clone().unwrap_or_default(),
        requests_per_unit: m.rate_limit.requests_per_unit,
        unit: pb_unit(m.rate_limit.unit) as i32,
    });
    let over = limit.is_over();
    let (remaining, reset) = match (limit.decision, limit.policy) {
        // A check-only or never-admitted limit was peeked at the cost of one request, and an
        // admitting peek answers as if that one were taken: the bucket as it is has one more
        // and is full again one emission interval sooner.
        (Some(d), Some(policy)) if d.is_allowed() && (limit.cost == 0 || limit.never) => (
            d.remaining().saturating_add(1).min(policy.burst()),
            Some(d.reset_after().saturating_sub(policy.emission_interval())),
        ),
        (Some(d), _) => (d.remaining(), Some(d.reset_after())),
        (None, None) => (0, Some(m.rate_limit.unit.duration())),
        (None, Some(_)) => (0, None),
    };
    DescriptorStatus {
        code: if over && !limit.is_soft() {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        current_limit,
        limit_remaining: if over { 0 } else { remaining },
        duration_until_reset: reset.map(pb_duration),
        ..DescriptorStatus::default()
    }
}

/// envoyproxy/ratelimit's quota-mode metadata: when any descriptor matched a limit in quota
/// mode, `quotaModeEnabled: true` and `quotaModeViolations`, the indices of the descriptors whose
/// quota-mode limit is over (for Envoy to route on, or log). `None` otherwise.
fn quota_metadata(slots: &[Slot], limits: &[Merged<'_>]) -> Option<PbStruct> {
    let mut enabled = false;
    let mut violations = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let Slot::Limit(at) = *slot else { continue };
        let limit = &limits[at];
        if limit.matched.quota_mode {
            enabled = true;
            if limit.is_over() {
                violations.push(PbValue {
                    // Indices are small: exact in an f64.
                    kind: Some(Kind::NumberValue(index as f64)),
                });
            }
        }
    }
    enabled.then(|| PbStruct {
        fields: [
            (
                "quotaModeEnabled".to_string(),
                PbValue {
                    kind: Some(Kind::BoolValue(true)),
                },
            ),
            (
                "quotaModeViolations".to_string(),
                PbValue {
                    kind: Some(Kind::ListValue(ListValue { values: violations })),
                },
            ),
        ]
        .into_iter()
        .collect(),
    })
}

/// envoyproxy/ratelimit's rate limit headers: of the descriptor with a limit that has the least
/// remaining (an over-limit one wins), its limit, what remains, and the whole seconds until its
/// bucket is full again (rounded up: a client that waits that long finds it full).
fn rate_limit_headers(names: &HeaderNames, statuses: &[DescriptorStatus]) -> Vec<HeaderValue> {
    let mut closest: Option<&DescriptorStatus> = None;
    for status in statuses.iter().filter(|s| s.current_limit.is_some()) {
        let over = status.code == Code::OverLimit as i32;
        if over || closest.is_none_or(|c| status.limit_remaining < c.limit_remaining) {
            closest = Some(status);
        }
    }
    let Some(status) = closest else {
        return Vec::new();
    };
    let limit = status
        .current_limit
        .as_ref()
        .map_or(0, |l| l.requests_per_unit);
    let reset = status.duration_until_reset.as_ref().map_or(0, |d| {
        d.seconds.max(0).saturating_add(i64::from(d.nanos > 0))
    });
    [
        (&names.limit, limit.to_string()),
        (&names.remaining, status.limit_remaining.to_string()),
        (&names.reset, reset.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| HeaderValue {
        key: key.clone(),
        value,
        ..HeaderValue::default()
    })
    .collect()
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry as PbEntry;
    use ratelimit_core::MemoryStore;

    const CONFIG: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 10 }
  - key: path
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 2 }
    shadow_mode: true
  - key: tenant
    value: acme
    descriptors:
      - key: plan
        rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: user
    detailed_metric: true
    rate_limit: { unit: minute, requests_per_unit: 5 }
  - key: route
    value: "api*"
    value_to_metric: true
    rate_limit: { unit: minute, requests_per_unit: 5 }
"#;

    fn server() -> RateLimitServer {
        let config = Config::parse("edge.yaml", CONFIG).unwrap();
        RateLimitServer::new(config, Arc::new(Limiter::new(MemoryStore::new())))
    }

    /// A request of one descriptor with `entries`, costing `hits`.
    fn request(entries: &[(&str, &str)], hits: u32) -> RateLimitRequest {
        RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| PbEntry {
                        key: (*key).into(),
                        value: (*value).into(),
                    })
                    .collect(),
                ..RateLimitDescriptor::default()
            }],
            hits_addend: hits,
        }
    }

    /// Each request's overall code, and the exposition text of what answering them recorded,
    /// in a recorder of their own.
    fn answer(server: &RateLimitServer, requests: &[RateLimitRequest]) -> (Vec<Code>, String) {
        let recorder = metrics::builder().unwrap().build_recorder();
        let handle = recorder.handle();
        // A runtime on this thread, so that the local recorder sees everything the calls record.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let codes = ::metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let mut codes = Vec::new();
                for request in requests {
                    let answer = server
                        .should_rate_limit(Request::new(request.clone()))
                        .await;
                    codes.push(match answer {
                        Ok(response) => Code::try_from(response.get_ref().overall_code).unwrap(),
                        Err(_) => Code::Unknown,
                    });
                }
                codes
            })
        });
        (codes, handle.render())
    }

    /// The value of `name{labels}` in `text`.
    fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
        let sample = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&sample)?.parse().ok())
    }

    #[test]
    fn within_near_and_over_limit_count_hits_as_envoyproxy_does() {
        let ip = [("remote_address", "10.0.0.1")];
        // Limit 10, near-limit threshold 8: 7 hits within; 2 more, within and one of them near;
        // 3 more from 9: over (2 of them), the one up to the limit near.
        let (codes, text) = answer(
            &server(),
            &[request(&ip, 7), request(&ip, 2), request(&ip, 3)],
        );
        assert_eq!(codes, [Code::Ok, Code::Ok, Code::OverLimit]);
        let rule = r#"domain="edge",key1="remote_address""#;
        assert_eq!(
            value(&text, metrics::TOTAL_HITS, rule),
            Some(12.0),
            "{text}"
        );
        assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(9.0));
        assert_eq!(value(&text, metrics::NEAR_LIMIT, rule), Some(2.0));
        assert_eq!(value(&text, metrics::OVER_LIMIT, rule), Some(2.0));
        assert_eq!(value(&text, metrics::SHADOW_MODE, rule), None);
        let method = r#"grpc_method="ShouldRateLimit""#;
        assert_eq!(value(&text, metrics::TOTAL_REQUESTS, method), Some(3.0));
        assert_eq!(
            value(&text, &format!("{}_count", metrics::RESPONSE_TIME), method),
            Some(3.0)
        );
        assert_eq!(
            value(&text, metrics::REQUESTS, r#"code="over_limit""#),
            Some(1.0)
        );
    }

    #[test]
    fn the_near_limit_ratio_is_a_setting() {
        let ip = [("remote_address", "10.0.0.1")];
        // Ratio 0.5: the threshold of 10 is 5, and the sixth hit is near.
        let (_, text) = answer(&server().with_near_limit_ratio(0.5), &[request(&ip, 6)]);
        let rule = r#"domain="edge",key1="remote_address""#;
        assert_eq!(value(&text, metrics::NEAR_LIMIT, rule), Some(1.0), "{text}");
        assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(6.0));
    }

    #[test]
    fn shadow_mode_counts_its_over_limit_hits_and_answers_ok() {
        let login = [("path", "/login")];
        let (codes, text) = answer(
            &server(),
            &[request(&login, 1), request(&login, 1), request(&login, 1)],
        );
        assert_eq!(codes, [Code::Ok, Code::Ok, Code::Ok]);
        let rule = r#"domain="edge",key1="path_/login""#;
        assert_eq!(value(&text, metrics::TOTAL_HITS, rule), Some(3.0), "{text}");
        assert_eq!(value(&text, metrics::OVER_LIMIT, rule), Some(1.0));
        assert_eq!(value(&text, metrics::SHADOW_MODE, rule), Some(1.0));
        assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(2.0));
        // One request of the three was over in shadow mode.
        let shadow_requests = format!("{} 1", metrics::SHADOW_OVER_LIMIT);
        assert!(text.lines().any(|line| line == shadow_requests), "{text}");
    }

    #[test]
    fn a_two_level_rule_has_key2() {
        let (_, text) = answer(
            &server(),
            &[request(&[("tenant", "acme"), ("plan", "free")], 1)],
        );
        let rule = r#"domain="edge",key1="tenant_acme",key2="plan""#;
        assert_eq!(value(&text, metrics::TOTAL_HITS, rule), Some(1.0), "{text}");
        assert_eq!(value(&text, metrics::WITHIN_LIMIT, rule), Some(1.0));
    }

    #[test]
    fn detailed_metric_and_value_to_metric_name_the_request_value() {
        let (_, text) = answer(
            &server(),
            &[
                request(&[("user", "alice")], 1),
                request(&[("user", "bob")], 2),
                request(&[("route", "api/v1")], 1),
            ],
        );
        // Without `detailed_metric` both would be key1="user".
        for (user, hits) in [("alice", 1.0), ("bob", 2.0)] {
            let rule = format!(r#"domain="edge",key1="user_{user}""#);
            assert_eq!(
                value(&text, metrics::TOTAL_HITS, &rule),
                Some(hits),
                "{text}"
            );
        }
        assert!(!text.contains(r#"key1="user""#), "{text}");
        // Without `value_to_metric` it would be the pattern, key1="route_api*".
        let rule = r#"domain="edge",key1="route_api/v1""#;
        assert_eq!(value(&text, metrics::TOTAL_HITS, rule), Some(1.0), "{text}");
    }

    #[test]
    fn errors_are_service_errors() {
        let mut empty = request(&[("remote_address", "10.0.0.1")], 1);
        empty.domain.clear();
        let (codes, text) = answer(&server(), &[empty]);
        assert_eq!(codes, [Code::Unknown]);
        assert_eq!(
            value(
                &text,
                metrics::SHOULD_RATE_LIMIT_ERROR,
                r#"err_type="service_error""#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                metrics::TOTAL_REQUESTS,
                r#"grpc_method="ShouldRateLimit""#
            ),
            Some(1.0)
        );
        // Nothing was decided: no rule counted anything.
        assert!(!text.contains(metrics::TOTAL_HITS), "{text}");
    }
}
