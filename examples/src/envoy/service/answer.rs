//! What the answer carries besides its code: each descriptor's status, the quota-mode metadata
//! and the rate limit headers, in envoyproxy/ratelimit's forms.
//!
//! Apart because these only read a decided request: they render, and decide nothing.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit as PbRateLimit,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, ListValue, Struct as PbStruct, Value as PbValue,
};

use crate::envoy::config::Unit;
use crate::envoy::settings::HeaderNames;

use super::merged::{Merged, Slot};

/// A descriptor's status as envoyproxy/ratelimit reports it: its code, the limit that applied,
/// what is left and when the bucket is full again. No limit: `OK` with no limit. Unlimited: `OK`
/// with no limit and `u32::MAX` remaining. Over the limit: nothing remaining; in shadow or
/// quota mode the code is still `OK`, so that Envoy, which reads the statuses as well as the
/// overall code, never limits on it. A limit of zero is full again after one unit.
pub(super) fn status_of(slot: &Slot, limits: &[Merged<'_>]) -> DescriptorStatus {
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
pub(super) fn quota_metadata(slots: &[Slot], limits: &[Merged<'_>]) -> Option<PbStruct> {
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
pub(super) fn rate_limit_headers(
    names: &HeaderNames,
    statuses: &[DescriptorStatus],
) -> Vec<HeaderValue> {
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

/// A unit as Envoy's API spells it.
pub(super) fn pb_unit(unit: Unit) -> PbUnit {
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

/// A duration as protobuf's `Duration`.
pub(super) fn pb_duration(duration: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}
