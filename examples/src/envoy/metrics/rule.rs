//! The per-rule statistics: how one descriptor's hits on a rule split into within, near, over
//! and shadow, and their labels.
//!
//! Apart because this is the arithmetic of envoyproxy/ratelimit's base limiter, checked against it
//! on its own; recording is one call at the end.

use metrics::{Label, counter};

use super::{NEAR_LIMIT, OVER_LIMIT, SHADOW_MODE, StatKey, TOTAL_HITS, WITHIN_LIMIT};

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
