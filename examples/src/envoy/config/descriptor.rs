//! The descriptor tree of a domain file, the entries of a request, and the checks serde cannot
//! make.
//!
//! Apart from loading and matching because both walk the same nodes and must agree on what a
//! node's value is (`value: ""` is none) and which two nodes are the same rule.

use serde::Deserialize;

use super::{ConfigError, RateLimit};
use crate::envoy::matcher;

/// One node of a domain's descriptor tree.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// The entry key this node matches.
    pub key: String,
    /// The entry value it matches; `None` matches any value (one bucket per value).
    #[serde(default)]
    pub value: Option<String>,
    /// The limit of requests whose descriptor ends here.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Nested nodes, for descriptors with more entries.
    #[serde(default)]
    pub descriptors: Vec<Descriptor>,
    /// Counted and reported, never enforced: over its limit, the descriptor's status is `OK`
    /// with nothing remaining, and it never makes the overall code `OVER_LIMIT`.
    #[serde(default)]
    pub shadow_mode: bool,
    /// A soft limit (envoyproxy/ratelimit's quota mode): counted like any limit, never makes
    /// the overall code `OVER_LIMIT`; its descriptor's status says `OK` and the response's
    /// dynamic metadata lists it under `quotaModeViolations` when it is over.
    #[serde(default)]
    pub quota_mode: bool,
    /// Values matched by this node's wildcard share one bucket (the pattern's), instead of one
    /// bucket per value. Only for a value with a `*`.
    #[serde(default)]
    pub share_threshold: bool,
    /// envoyproxy/ratelimit's per-value statistics: when the node a request's descriptor ends at
    /// has it, the rule's statistics are kept under the request's own values at every level
    /// (`domain.key_value.key_value`), not the configuration's ([`StatKey`](super::StatKey)).
    #[serde(default)]
    pub detailed_metric: bool,
    /// envoyproxy/ratelimit's runtime value in statistics names: at this node's level the stat
    /// key has the request's value (`key_value`) instead of the node's own (`key` for a key-only
    /// node, the pattern for a wildcard). `detailed_metric` on the last node takes precedence.
    #[serde(default)]
    pub value_to_metric: bool,
}

/// One file as written: a domain and its top-level descriptors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DomainFile {
    pub(super) domain: String,
    #[serde(default)]
    pub(super) descriptors: Vec<Descriptor>,
}

/// One entry of a request's descriptor, as Envoy sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl Entry {
    /// An entry.
    pub fn new(key: &str, value: &str) -> Self {
        Entry {
            key: key.to_string(),
            value: value.to_string(),
        }
    }
}

/// A node's value, `None` for key-only (`value: ""` is no value, as in envoyproxy/ratelimit).
pub(super) fn value_of(node: &Descriptor) -> Option<&str> {
    node.value.as_deref().filter(|v| !v.is_empty())
}

/// Two nodes of one level that would be the same rule.
pub(super) fn alike(a: &Descriptor, b: &Descriptor) -> bool {
    a.key == b.key && value_of(a) == value_of(b)
}

/// Checks what serde cannot: keys not empty, limits expressible as policies, no two nodes of a
/// level alike, `share_threshold` only on a wildcard value.
pub(super) fn check_tree(file: &str, level: &[Descriptor], path: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Conflict {
        file: file.to_string(),
        message,
    };
    for (index, node) in level.iter().enumerate() {
        let here = format!("{path}[{index}]");
        if node.key.trim().is_empty() {
            return Err(invalid(format!("{here}.key: must not be empty")));
        }
        if let Some(limit) = &node.rate_limit {
            // Zero admits nothing and needs no policy; any other count must make one.
            if !limit.unlimited && !limit.admits_nothing() {
                limit
                    .policy()
                    .map_err(|e| invalid(format!("{here}.rate_limit: {e}")))?;
            }
        }
        if node.share_threshold && !value_of(node).is_some_and(matcher::is_pattern) {
            return Err(invalid(format!(
                "{here}.share_threshold: only for a wildcard value (one with a `*`), not {:?}",
                node.value
            )));
        }
        if level[..index].iter().any(|other| alike(other, node)) {
            return Err(invalid(format!(
                "{here}: a second descriptor with key {:?} and value {:?}",
                node.key, node.value
            )));
        }
        check_tree(file, &node.descriptors, &format!("{here}.descriptors"))?;
    }
    Ok(())
}
