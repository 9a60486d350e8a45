//! The configuration as envoyproxy/ratelimit's `/rlconfig` prints it.
//!
//! Apart because it is output for people (the debug port, `ratelimit-service check`), with an
//! order and a format of its own that nothing else reads.

use std::fmt::Write as _;

use super::descriptor::value_of;
use super::{Config, Descriptor};

impl Config {
    /// Every limit of the configuration, one line per descriptor path that has one, in
    /// envoyproxy/ratelimit's `/rlconfig` form (`domain.key_value.key2: unit=SECOND
    /// requests_per_unit=10, shadow_mode: false`), domains and paths in order. What
    /// `ratelimit-service check` prints and the debug port's `/rlconfig` serves.
    pub fn dump(&self) -> String {
        fn walk(out: &mut String, path: &str, nodes: &[Descriptor]) {
            for node in nodes {
                let path = match value_of(node) {
                    Some(value) => format!("{path}.{}_{value}", node.key),
                    None => format!("{path}.{}", node.key),
                };
                if let Some(limit) = &node.rate_limit {
                    let _ = write!(out, "{path}: ");
                    if limit.unlimited {
                        out.push_str("unlimited");
                    } else {
                        let _ = write!(
                            out,
                            "unit={} requests_per_unit={}",
                            limit.unit.name(),
                            limit.requests_per_unit
                        );
                    }
                    let _ = write!(out, ", shadow_mode: {}", node.shadow_mode);
                    if node.quota_mode {
                        out.push_str(", quota_mode: true");
                    }
                    if node.share_threshold {
                        out.push_str(", share_threshold: true");
                    }
                    if let Some(name) = &limit.name {
                        let _ = write!(out, ", name: {name}");
                    }
                    if !limit.replaces.is_empty() {
                        let _ = write!(out, ", replaces: [{}]", limit.replaces.join(", "));
                    }
                    out.push('\n');
                }
                walk(out, &path, &node.descriptors);
            }
        }
        let mut names: Vec<&String> = self.domains.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            walk(&mut out, name, &self.domains[name].descriptors);
        }
        out
    }
}
