//! What a request's descriptor counts in: the configured limit it matched, or the limit it
//! brought itself, and its entries.
//!
//! Apart because a request's own limit (Envoy's override) has its own bucket layout, which must
//! never meet a configured rule's.

use std::borrow::Cow;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use ratelimit_core::{BucketKey, Decision, Limit, Policy};

use crate::envoy::config::{Entry, Matched, RateLimit, StatKey, Unit};

/// The limit a request brought for one descriptor (`RateLimitDescriptor.limit`), counted in a
/// bucket of its own: the descriptor's entries and then the override itself as one more part, so
/// that its part count is odd and no configured rule's bucket (key and value pairs) can be it,
/// and a different override is a different bucket. A unit Envoy does not know makes a limit
/// that admits nothing (failing closed; envoyproxy/ratelimit cannot count it either).
pub(super) fn override_of(
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

/// A descriptor's entries as the configuration matches them.
pub(super) fn entries_of(descriptor: &RateLimitDescriptor) -> Vec<Entry> {
    descriptor
        .entries
        .iter()
        .map(|e| Entry::new(&e.key, &e.value))
        .collect()
}

/// One limit of a request: the descriptors of the request that name its bucket, merged.
pub(super) struct Merged<'c> {
    pub(super) matched: Matched<'c>,
    /// `None` only for a limit the configuration check should have refused: never admits.
    pub(super) policy: Option<Policy>,
    /// The sum of the descriptors' costs, saturating.
    pub(super) cost: u64,
    pub(super) decision: Option<Decision>,
    /// Over limit without a store decision: the cost exceeds the burst, or the limiter refused it.
    pub(super) never: bool,
}

impl Merged<'_> {
    /// The limit to ask the store: `None` for a limit without a policy or with a cost that
    /// does not fit a u32 (both are `never`, and only peeked). A limit that only checks (cost
    /// 0), or can never be admitted, is peeked at the cost of one request: would the next
    /// request have room, and when is the bucket full again.
    pub(super) fn limit(&self) -> Option<Limit<'_>> {
        let cost = if self.cost == 0 || self.never {
            1
        } else {
            u32::try_from(self.cost).ok()?
        };
        Some(Limit::new(&self.matched.bucket, self.policy?).with_cost(cost))
    }

    /// What the store was asked to count: the cost, or one for a peek (see [`limit`](Self::limit)).
    pub(super) fn asked(&self) -> u64 {
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
    pub(super) fn used_before(&self) -> u64 {
        let capacity = u64::from(self.matched.rate_limit.requests_per_unit);
        let room = match self.decision {
            Some(d) if d.is_allowed() => u64::from(d.remaining()).saturating_add(self.asked()),
            Some(d) => u64::from(d.remaining()),
            None => 0,
        };
        capacity.saturating_sub(room)
    }

    pub(super) fn is_over(&self) -> bool {
        self.never || self.decision.is_some_and(|d| !d.is_allowed())
    }

    /// Shadow or quota mode: counted and reported, never the reason for `OVER_LIMIT`.
    pub(super) fn is_soft(&self) -> bool {
        self.matched.shadow_mode || self.matched.quota_mode
    }
}

/// What a request's descriptor counts in.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// No limit (none matched, or it was replaced).
    None,
    /// An unlimited limit: `OK`, with everything remaining.
    Unlimited,
    /// The limit at this index of the request's merged limits.
    Limit(usize),
}
