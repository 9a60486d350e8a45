//! The rate-limit descriptor configuration of envoyproxy/ratelimit, so that existing files work
//! unchanged: one domain per file (or several merged, with `MERGE_DOMAIN_CONFIG`), nested
//! descriptors with a key and an optional value (exact, or a wildcard with `*` anywhere), and a
//! `rate_limit` of `requests_per_unit` per `unit` (any letter case; zero admits nothing), or
//! `unlimited`, with a `name` and the names it `replaces`; per descriptor `shadow_mode`,
//! `quota_mode`, `share_threshold`, `detailed_metric` and `value_to_metric`.
//!
//! ```yaml
//! domain: edge
//! descriptors:
//!   - key: remote_address            # any value: one bucket per address
//!     rate_limit: { unit: second, requests_per_unit: 10 }
//!   - key: path
//!     value: /login                   # this value only
//!     rate_limit: { unit: minute, requests_per_unit: 5 }
//!     shadow_mode: true               # counted and reported, never enforced
//!   - key: tenant
//!     descriptors:                    # nested: tenant, then plan
//!       - key: plan
//!         value: free
//!         rate_limit: { unit: hour, requests_per_unit: 1000 }
//! ```
//!
//! Invalid files are refused with the file, line, column and field at fault, and a service keeps
//! the configuration it had (see [`Config::load`]).
//!
//! The configuration's parts are one file each beside this one: limits and units (`limit.rs`), the
//! descriptor tree and its checks (`descriptor.rs`), statistics keys (`stat_key.rs`), reading and
//! merging files (`load.rs`), a request's match (`lookup.rs`) and the `/rlconfig` dump
//! (`dump.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use thiserror::Error;

mod descriptor;
mod dump;
mod limit;
mod load;
mod lookup;
mod stat_key;

pub use descriptor::{Descriptor, Entry};
pub use limit::{RateLimit, Unit};
pub use lookup::Matched;
pub use stat_key::StatKey;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid descriptor configuration; the message names the field.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, with the path of the field (`descriptors[0].rate_limit.unit: ...`).
        message: String,
    },
    /// The configuration as a whole is wrong (a domain in two files, no files at all).
    #[error("{file}: {message}")]
    Conflict {
        /// The file (or directory).
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A limit is valid but the store in use cannot count it (a rate finer than its clock):
    /// refused when the configuration loads, so that no request ever meets it.
    #[error("{file}: {field}: {source}")]
    Unrepresentable {
        /// The file.
        file: String,
        /// The descriptor's path in the file (`descriptors[0].descriptors[1].rate_limit`).
        field: String,
        /// What the store said.
        #[source]
        source: ratelimit_core::RequestError,
    },
}

/// One domain: its top-level descriptors, from one file or (merged) several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Domain {
    /// The files that define it, in load order.
    files: Vec<String>,
    descriptors: Vec<Descriptor>,
    /// Per top-level descriptor: its file and its index there, for messages.
    origins: Vec<(String, usize)>,
}

/// Every domain's descriptor tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    domains: HashMap<String, Domain>,
}

impl Config {
    /// The domains configured.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// Whether `domain` is configured (a request's own `limit` applies only in a known domain,
    /// as in envoyproxy/ratelimit).
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }
}

#[cfg(test)]
mod tests;
