//! A request's descriptor matched against a domain's tree, as envoyproxy/ratelimit's `GetLimit`
//! finds its limit, with the bucket and statistics key it counts under.
//!
//! Apart from loading because it runs on every request: it never fails, only finds or does not.

use std::borrow::Cow;
use std::fmt::Write as _;

use ratelimit_core::BucketKey;

use super::descriptor::value_of;
use super::{Config, Descriptor, Entry, RateLimit, StatKey};
use crate::envoy::matcher;

/// The limit that applies to a descriptor, and the bucket it counts in.
///
/// The bucket's name is a [`BucketKey`]: the domain as its namespace, then every entry's key and
/// value as length-prefixed parts. No value can spell another descriptor's bucket (a value
/// `t|sub=s` is one part, not three), and a name too long for a store is hashed to a fixed
/// size, the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'a> {
    /// The limit: the configuration's, or one the request brought (its `limit` override).
    pub rate_limit: Cow<'a, RateLimit>,
    /// Whether the matched node is in shadow mode.
    pub shadow_mode: bool,
    /// Whether the matched node is in quota mode (a soft limit).
    pub quota_mode: bool,
    /// The bucket's key: the domain and every entry, so each value of a wildcard node has its own
    /// (unless the node shares its threshold: then the pattern stands for the value).
    pub bucket: String,
    /// The descriptor's path in its file (`descriptors[0].descriptors[2]`), for messages.
    pub field: String,
    /// The rule's statistics key, as envoyproxy/ratelimit names it.
    pub stat_key: StatKey,
}

impl Config {
    /// The limit for a request's descriptor in `domain`, as envoyproxy/ratelimit's `GetLimit`
    /// finds it. At each depth the entry matches, in this order, the node with its key and
    /// exactly its value, else the first node (in file order) with its key and a wildcard value
    /// that matches it (see [`matcher`]), else the node with its key and no value. The search
    /// then goes on among that node's children only: a node once matched is never given up for
    /// another (no backtracking). Only the node matched by the last entry gives a limit: a limit
    /// applies at the request descriptor's depth, not above or below it. `None` when an entry
    /// matches no node, or the last node has no limit.
    pub fn limit_for(&self, domain: &str, entries: &[Entry]) -> Option<Matched<'_>> {
        let config = self.domains.get(domain)?;
        let mut level = config.descriptors.as_slice();
        let mut node = None;
        let mut bucket = BucketKey::new(domain);
        let mut field = String::new();
        let mut stat_key = StatKey::new(domain);
        for entry in entries {
            let (index, found, by_wildcard) = find(level, entry)?;
            let part = if found.value_to_metric {
                Some(entry.value.as_str())
            } else {
                value_of(found)
            };
            stat_key.push(&found.key, part);
            bucket.push(&entry.key);
            match (&found.value, by_wildcard && found.share_threshold) {
                // Every value the pattern matches counts in the pattern's bucket. The part is
                // marked, so that it cannot be the bucket of a request whose value is the
                // pattern itself matched exactly.
                (Some(pattern), true) => bucket.push(&format!("*share_threshold*{pattern}")),
                _ => bucket.push(&entry.value),
            }
            if node.is_none() {
                let (_, in_file) = &config.origins[index];
                let _ = write!(field, "descriptors[{in_file}]");
            } else {
                let _ = write!(field, ".descriptors[{index}]");
            }
            level = &found.descriptors;
            node = Some(found);
        }
        let node = node?;
        if node.detailed_metric {
            // Only now known: the last node decides that every level has the request's value.
            stat_key = StatKey::new(domain);
            for entry in entries {
                stat_key.push(&entry.key, Some(&entry.value));
            }
        }
        Some(Matched {
            rate_limit: Cow::Borrowed(node.rate_limit.as_ref()?),
            shadow_mode: node.shadow_mode,
            quota_mode: node.quota_mode,
            bucket: bucket.finish(),
            field,
            stat_key,
        })
    }
}

/// The node of `level` that `entry` matches: its index, the node, and whether a wildcard matched.
fn find<'c>(level: &'c [Descriptor], entry: &Entry) -> Option<(usize, &'c Descriptor, bool)> {
    let keyed = || level.iter().enumerate().filter(|(_, d)| d.key == entry.key);
    if let Some((i, d)) = keyed().find(|(_, d)| value_of(d) == Some(entry.value.as_str())) {
        return Some((i, d, false));
    }
    if let Some((i, d)) = keyed().find(|(_, d)| {
        value_of(d).is_some_and(|v| matcher::is_pattern(v) && matcher::matches(v, &entry.value))
    }) {
        return Some((i, d, true));
    }
    keyed()
        .find(|(_, d)| value_of(d).is_none())
        .map(|(i, d)| (i, d, false))
}
