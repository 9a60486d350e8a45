//! The decision of one request: its descriptors matched, merged into limits, decided, counted
//! and answered.
//!
//! Apart from the server's setup because this is the request path, and the one function that
//! puts the other parts of the decision in their order.

use std::collections::{HashMap, HashSet};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::Status;

use crate::envoy::config::{Matched, StatKey};
use crate::envoy::metrics::{self, RuleHits};

use super::RateLimitServer;
use super::answer::{quota_metadata, rate_limit_headers, status_of};
use super::enforce::Call;
use super::merged::{Merged, Slot, entries_of, override_of};

impl RateLimitServer {
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
    ///
    /// [`MAX_LIMITS`]: ratelimit_core::MAX_LIMITS
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
        if over {
            self.record_denied(request, &slot_of, &limits);
        }
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

    /// The descriptors of a denied request whose own limit was over, into the status page's
    /// table of the most limited keys: the domain, and the entries as `key=value` (built only
    /// for a denial; the table keeps a bounded prefix).
    fn record_denied(&self, request: &RateLimitRequest, slot_of: &[Slot], limits: &[Merged<'_>]) {
        for (descriptor, slot) in request.descriptors.iter().zip(slot_of) {
            let Slot::Limit(at) = slot else { continue };
            if !limits.get(*at).is_some_and(|l| l.is_over() && !l.is_soft()) {
                continue;
            }
            let mut key = String::new();
            for entry in &descriptor.entries {
                if !key.is_empty() {
                    key.push_str(", ");
                }
                key.push_str(&entry.key);
                key.push('=');
                key.push_str(&entry.value);
                if key.len() > crate::status::limited::KEY_BYTES {
                    break;
                }
            }
            self.limited.record(&request.domain, &key);
        }
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
}
