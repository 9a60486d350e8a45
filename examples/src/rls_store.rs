//! A rate limit service (Envoy's `ShouldRateLimit`, ours or envoyproxy/ratelimit) as the decision
//! source behind ratelimit-tower's layer, so that a gateway asking a central service keeps its
//! layer: the same rules, key extraction, responses, observers and anomaly controller as when it
//! decides itself.
//!
//! Each limit of a request becomes one descriptor of one `ShouldRateLimit` call: the layer's store
//! key `rule|value` is the entry `rule = value` (a rule's shared bucket for requests without a
//! key, `rule!missing`, is `rule = ""`), and the limit's cost its `hits_addend`. The service's
//! configuration gives the limits: a limit's policy is not sent, so a rule behind this store is
//! named after the descriptor key the service counts and its policy only fills in the
//! `RateLimit-Policy` field. That is the one way this differs from a [`Store`] that counts by
//! itself, and why it is a decision source here in the examples and not a backend crate: the
//! conformance suite's own policies would not be the ones applied. Whether several limits are
//! all-or-nothing is the service's: ratelimit-service decides them in one store call.

use std::time::Duration;

use async_trait::async_trait;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use ratelimit_core::{Decision, Limit, Store, StoreError, Verdict, validate};
use tonic::transport::Channel;

/// The rate limit service at the other end of a gRPC channel, asked in one domain.
#[derive(Clone)]
pub struct RlsStore {
    client: RateLimitServiceClient<Channel>,
    domain: String,
}

impl RlsStore {
    /// Asks the service behind `channel` in `domain`.
    pub fn new(channel: Channel, domain: impl Into<String>) -> Self {
        RlsStore {
            client: RateLimitServiceClient::new(channel),
            domain: domain.into(),
        }
    }

    /// One `ShouldRateLimit` call for `limits`, each with `hits` of its cost (0: only look).
    async fn ask(&self, limits: &[Limit<'_>], consume: bool) -> Result<Verdict, StoreError> {
        validate(limits)?;
        let request = RateLimitRequest {
            domain: self.domain.clone(),
            descriptors: limits
                .iter()
                .map(|limit| descriptor(limit, consume))
                .collect(),
            hits_addend: 0,
        };
        let mut client = self.client.clone();
        let response = client
            .should_rate_limit(request)
            .await
            .map_err(|status| StoreError::Unavailable(Box::new(status)))?;
        verdict(limits, response.get_ref())
    }
}

/// A limit as a descriptor: its store key split back into the rule and the extracted value.
fn descriptor(limit: &Limit<'_>, consume: bool) -> RateLimitDescriptor {
    let (key, value) = match limit.key.split_once('|') {
        Some((rule, value)) => (rule, value),
        None => (limit.key.strip_suffix("!missing").unwrap_or(limit.key), ""),
    };
    RateLimitDescriptor {
        entries: vec![Entry {
            key: key.to_string(),
            value: value.to_string(),
        }],
        // A descriptor's own addend of zero only looks (ratelimit-service, envoyproxy/ratelimit).
        hits_addend: Some(UInt64Value {
            value: if consume { u64::from(limit.cost) } else { 0 },
        }),
        ..RateLimitDescriptor::default()
    }
}

/// The service's answer as a verdict: one decision per limit, in order.
fn verdict(limits: &[Limit<'_>], response: &RateLimitResponse) -> Result<Verdict, StoreError> {
    let allowed = match Code::try_from(response.overall_code) {
        Ok(Code::Ok) => true,
        Ok(Code::OverLimit) => false,
        _ => {
            return Err(StoreError::BadReply(format!(
                "overall code {}",
                response.overall_code
            )));
        }
    };
    if response.statuses.len() != limits.len() {
        return Err(StoreError::BadReply(format!(
            "{} statuses for {} descriptors",
            response.statuses.len(),
            limits.len()
        )));
    }
    let decisions = limits
        .iter()
        .zip(&response.statuses)
        .map(|(limit, status)| decision(limit, status))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Verdict::new(allowed, decisions))
}

fn decision(limit: &Limit<'_>, status: &DescriptorStatus) -> Result<Decision, StoreError> {
    let over = match Code::try_from(status.code) {
        Ok(Code::Ok) => false,
        Ok(Code::OverLimit) => true,
        _ => return Err(StoreError::BadReply(format!("status code {}", status.code))),
    };
    let reset = status
        .duration_until_reset
        .as_ref()
        .map_or(Duration::ZERO, |d| {
            Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            )
        });
    // No limit applies to a descriptor the service has no rule for: it reports none, and the
    // layer's own policy labels it.
    let capacity = status
        .current_limit
        .as_ref()
        .map_or(limit.policy.burst(), |l| l.requests_per_unit);
    // Over limit, the service's reset is when the window it counts in starts again: the wait
    // (never zero: `Decision::new` raises a denial's wait to at least a nanosecond).
    let retry_after = if over { reset } else { Duration::ZERO };
    Ok(Decision::new(
        !over,
        capacity,
        status.limit_remaining,
        retry_after,
        reset,
    ))
}

#[async_trait]
impl Store for RlsStore {
    async fn acquire(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.ask(limits, true).await
    }

    async fn peek(&self, limits: &[Limit<'_>]) -> Result<Verdict, StoreError> {
        self.ask(limits, false).await
    }

    async fn reset(&self, key: &str) -> Result<(), StoreError> {
        Err(StoreError::Misconfigured(format!(
            "the rate limit service has no reset: {key:?} stays as the service counts it"
        )))
    }
}

impl std::fmt::Debug for RlsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RlsStore")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::RateLimit;
    use ratelimit_core::Policy;

    fn limit(key: &str) -> Limit<'_> {
        Limit::new(
            key,
            Policy::per_minute(3).unwrap_or_else(|_| unreachable!()),
        )
    }

    fn status(code: Code, remaining: u32, reset_secs: i64) -> DescriptorStatus {
        DescriptorStatus {
            code: code as i32,
            current_limit: Some(RateLimit {
                requests_per_unit: 3,
                ..RateLimit::default()
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: reset_secs,
                nanos: 0,
            }),
            ..DescriptorStatus::default()
        }
    }

    #[test]
    fn store_keys_become_one_entry_descriptors_with_the_cost_as_addend() {
        let asked = descriptor(&limit("remote_address|10.0.0.1").with_cost(2), true);
        assert_eq!(asked.entries[0].key, "remote_address");
        assert_eq!(asked.entries[0].value, "10.0.0.1");
        assert_eq!(asked.hits_addend.map(|h| h.value), Some(2));
        let looked = descriptor(&limit("remote_address!missing"), false);
        assert_eq!(
            (
                looked.entries[0].key.as_str(),
                looked.entries[0].value.as_str()
            ),
            ("remote_address", "")
        );
        assert_eq!(looked.hits_addend.map(|h| h.value), Some(0));
        // A value holding the separator stays whole: only the first `|` ends the rule's name.
        let piped = descriptor(&limit("path|/a|b"), true);
        assert_eq!(piped.entries[0].value, "/a|b");
    }

    #[test]
    fn an_over_limit_answer_denies_with_the_services_reset_as_the_wait() {
        let limits = [limit("remote_address|10.0.0.1"), limit("path|/x")];
        let response = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![status(Code::OverLimit, 0, 42), status(Code::Ok, 2, 0)],
            ..RateLimitResponse::default()
        };
        let verdict = verdict(&limits, &response).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!verdict.is_allowed());
        let first = verdict.decisions()[0];
        assert!(!first.is_allowed());
        assert_eq!(first.retry_after(), Duration::from_secs(42));
        assert_eq!((first.limit(), first.remaining()), (3, 0));
        assert!(verdict.decisions()[1].is_allowed());
    }

    #[test]
    fn answers_that_make_no_sense_are_bad_replies() {
        let limits = [limit("remote_address|10.0.0.1")];
        let unknown = RateLimitResponse {
            overall_code: Code::Unknown as i32,
            statuses: vec![status(Code::Ok, 1, 0)],
            ..RateLimitResponse::default()
        };
        assert!(matches!(
            verdict(&limits, &unknown),
            Err(StoreError::BadReply(_))
        ));
        let short = RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![],
            ..RateLimitResponse::default()
        };
        assert!(matches!(
            verdict(&limits, &short),
            Err(StoreError::BadReply(_))
        ));
    }
}
