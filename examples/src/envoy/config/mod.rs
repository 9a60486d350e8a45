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

use super::matcher;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ratelimit_core::{BucketKey, Policy, PolicyError, Store, check_policy};
use serde::Deserialize;
use thiserror::Error;

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

/// The unit of a `rate_limit`, in any letter case (`second`, `SECOND`, `Second`), as
/// envoyproxy/ratelimit reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A second.
    Second,
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A day.
    Day,
    /// A week.
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than `try_from = "String"`: an error raised while the field itself
        // is read keeps the field's path (`descriptors[0].rate_limit.unit`) in the message.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Unit;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a unit: second, minute, hour, day, week, month or year")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Unit, E> {
                Unit::from_name(name).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl Unit {
    /// The unit named `name`, in any letter case.
    pub fn from_name(name: &str) -> Result<Self, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "year" => Unit::Year,
            _ => {
                return Err(format!(
                    "unknown unit {name:?}, expected second, minute, hour, day, week, month or year"
                ));
            }
        })
    }

    /// The unit's name as Envoy's API spells it (`SECOND`).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Week => "WEEK",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }

    /// The unit's length.
    pub fn duration(self) -> Duration {
        let seconds = match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        };
        Duration::from_secs(seconds)
    }
}

/// A descriptor's limit: a count per unit, or none at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRateLimit")]
pub struct RateLimit {
    /// Requests admitted per unit (0 when unlimited). Zero with a unit admits nothing: every
    /// request for the descriptor is `OVER_LIMIT`, as envoyproxy/ratelimit answers it (a block
    /// list entry).
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
    /// Never limited (still counted).
    pub unlimited: bool,
    /// The limit's name, reported in responses and named by other limits' `replaces`.
    pub name: Option<String>,
    /// Names of limits this one replaces: when both match descriptors of one request, those
    /// limits are not applied to that request (neither checked nor debited).
    pub replaces: Vec<String>,
}

impl RateLimit {
    /// The GCRA policy of this limit: `requests_per_unit` per unit, all of it available at once
    /// (the burst is the count, as a fixed window would allow). An error for a limit of zero,
    /// which admits nothing and has no policy (see [`admits_nothing`](Self::admits_nothing)).
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        Policy::new(self.requests_per_unit, self.unit.duration())
    }

    /// `requests_per_unit: 0`: every request is over the limit, and no store is asked.
    pub fn admits_nothing(&self) -> bool {
        !self.unlimited && self.requests_per_unit == 0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    unit: Option<Unit>,
    requests_per_unit: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<RawReplace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplace {
    name: String,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = String;

    fn try_from(raw: RawRateLimit) -> Result<Self, String> {
        let mut replaces = Vec::with_capacity(raw.replaces.len());
        for replace in raw.replaces {
            // envoyproxy/ratelimit refuses both: an empty name replaces nothing, and a limit
            // replacing itself would never apply.
            if replace.name.is_empty() {
                return Err("rate_limit.replaces: a name must not be empty".into());
            }
            if raw.name.as_deref() == Some(replace.name.as_str()) {
                return Err(format!(
                    "rate_limit.replaces: {:?} is this limit's own name",
                    replace.name
                ));
            }
            replaces.push(replace.name);
        }
        if raw.unlimited {
            if raw.requests_per_unit.is_some() {
                return Err(
                    "rate_limit.requests_per_unit: not allowed with `unlimited: true`".into(),
                );
            }
            return Ok(RateLimit {
                requests_per_unit: 0,
                unit: raw.unit.unwrap_or(Unit::Second),
                unlimited: true,
                name: raw.name,
                replaces,
            });
        }
        let unit = raw
            .unit
            .ok_or("rate_limit.unit: missing (or `unlimited: true`)")?;
        let requests_per_unit = raw
            .requests_per_unit
            .ok_or("rate_limit.requests_per_unit: missing")?;
        Ok(RateLimit {
            requests_per_unit,
            unit,
            unlimited: false,
            name: raw.name,
            replaces,
        })
    }
}

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
    /// (`domain.key_value.key_value`), not the configuration's ([`StatKey`]).
    #[serde(default)]
    pub detailed_metric: bool,
    /// envoyproxy/ratelimit's runtime value in statistics names: at this node's level the stat
    /// key has the request's value (`key_value`) instead of the node's own (`key` for a key-only
    /// node, the pattern for a wildcard). `detailed_metric` on the last node takes precedence.
    #[serde(default)]
    pub value_to_metric: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    domain: String,
    #[serde(default)]
    descriptors: Vec<Descriptor>,
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

/// A rule's statistics key, as envoyproxy/ratelimit builds it: the domain, then one part per
/// level, joined with `.` (`edge.tenant_acme.plan`). A level's part is `key_value` for a node
/// with a value (the pattern itself for a wildcard) and `key` for a key-only node; with
/// `value_to_metric` on that level's node, or `detailed_metric` on the last node (every level
/// then), it is `key_value` with the request's value.
///
/// envoyproxy/ratelimit's Prometheus mapping splits the key at its dots into labels `domain`,
/// `key1` and `key2`; this one keeps where the domain and the first level end, so that a dot
/// inside a value does not move a label ([`key2`](Self::key2) is every level after the first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatKey {
    full: String,
    domain_end: usize,
    key1_end: Option<usize>,
}

impl StatKey {
    /// A key of `domain` with no level yet.
    pub fn new(domain: &str) -> Self {
        // Room for a couple of levels, so that pushing them rarely reallocates.
        let mut full = String::with_capacity(domain.len() + 48);
        full.push_str(domain);
        StatKey {
            domain_end: full.len(),
            full,
            key1_end: None,
        }
    }

    /// Appends one level: `key`, or `key_value` when `value` is given.
    pub fn push(&mut self, key: &str, value: Option<&str>) {
        self.full.push('.');
        self.full.push_str(key);
        if let Some(value) = value {
            self.full.push('_');
            self.full.push_str(value);
        }
        if self.key1_end.is_none() {
            self.key1_end = Some(self.full.len());
        }
    }

    /// The whole key, `domain.part.part`, as envoyproxy/ratelimit's statsd names carry it.
    pub fn full(&self) -> &str {
        &self.full
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        &self.full[..self.domain_end]
    }

    /// The first level's part (empty for a key of no level).
    pub fn key1(&self) -> &str {
        match self.key1_end {
            Some(end) => &self.full[self.domain_end + 1..end],
            None => "",
        }
    }

    /// The parts of every level after the first, joined with `.`; `None` for a one-level key.
    pub fn key2(&self) -> Option<&str> {
        let end = self.key1_end?;
        (end < self.full.len()).then(|| &self.full[end + 1..])
    }
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

/// Whether files of one domain are merged, from `MERGE_DOMAIN_CONFIG` as envoyproxy/ratelimit
/// reads it (Go's boolean spellings: `1`, `t`, `true`, `0`, `f`, `false`, any letter case for the
/// words); unset is false. Any other value is refused rather than guessed.
fn merge_domains_from_env() -> Result<bool, ConfigError> {
    let Ok(value) = std::env::var("MERGE_DOMAIN_CONFIG") else {
        return Ok(false);
    };
    match value.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(ConfigError::Conflict {
            file: "MERGE_DOMAIN_CONFIG".into(),
            message: format!("{other:?} is not a boolean (true or false)"),
        }),
    }
}

/// Every domain's descriptor tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    domains: HashMap<String, Domain>,
}

impl Config {
    /// Parses one file's text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.add(file, text, false)?;
        Ok(config)
    }

    fn add(&mut self, file: &str, text: &str, merge: bool) -> Result<(), ConfigError> {
        let parsed: DomainFile = serde_norway::from_str(text).map_err(|error| {
            let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
            // The message already names the field path; drop the location serde appends.
            let message = error.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })?;
        if parsed.domain.trim().is_empty() {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                line: 1,
                column: 1,
                message: "domain: must not be empty".into(),
            });
        }
        check_tree(file, &parsed.descriptors, "descriptors")?;
        let domain = match self.domains.get_mut(&parsed.domain) {
            Some(existing) if !merge => {
                let other = existing.files.join(", ");
                return Err(ConfigError::Conflict {
                    file: file.to_string(),
                    message: format!(
                        "domain {:?} is also defined in {other} (set MERGE_DOMAIN_CONFIG=true to merge them)",
                        parsed.domain
                    ),
                });
            }
            Some(existing) => existing,
            None => self.domains.entry(parsed.domain).or_default(),
        };
        domain.files.push(file.to_string());
        for (index, node) in parsed.descriptors.into_iter().enumerate() {
            // Merged files extend one top level, so a node of one file may not repeat a node of
            // another (envoyproxy/ratelimit refuses the duplicate composite key the same way).
            if let Some(at) = domain
                .descriptors
                .iter()
                .position(|other| alike(other, &node))
            {
                let (other_file, other_index) = &domain.origins[at];
                return Err(ConfigError::Conflict {
                    file: file.to_string(),
                    message: format!(
                        "descriptors[{index}]: key {:?} and value {:?} are also at {other_file}: descriptors[{other_index}]",
                        node.key, node.value
                    ),
                });
            }
            domain.descriptors.push(node);
            domain.origins.push((file.to_string(), index));
        }
        Ok(())
    }

    /// Reads a file, or every `.yaml` / `.yml` file of a directory (one domain each, unless
    /// `MERGE_DOMAIN_CONFIG` is true).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_texts(&Config::read(path)?)
    }

    /// The texts [`load`](Self::load) parses: the file, or every `.yaml` / `.yml` file of the
    /// directory, in name order, with their names. Symbolic links are followed (a Kubernetes
    /// ConfigMap volume is links into a directory that is swapped whole).
    pub fn read(path: &Path) -> Result<Vec<(PathBuf, String)>, ConfigError> {
        Config::read_with(path, false)
    }

    /// [`read`](Self::read), leaving out files whose names start with a dot when
    /// `ignore_dotfiles` is set (envoyproxy/ratelimit's `RUNTIME_IGNOREDOTFILES`: editors'
    /// swap files, `.git`).
    pub fn read_with(
        path: &Path,
        ignore_dotfiles: bool,
    ) -> Result<Vec<(PathBuf, String)>, ConfigError> {
        let io = |source| ConfigError::Io {
            file: path.to_owned(),
            source,
        };
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let file = entry.map_err(io)?.path();
                let dotted = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if matches!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) && !(ignore_dotfiles && dotted)
                {
                    files.push(file);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(ConfigError::Conflict {
                    file: path.display().to_string(),
                    message: "no .yaml or .yml files".into(),
                });
            }
        } else {
            files.push(path.to_owned());
        }
        let mut texts = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io {
                file: file.clone(),
                source,
            })?;
            texts.push((file, text));
        }
        Ok(texts)
    }

    /// Parses texts read by [`read`](Self::read): one domain each, or, with the environment
    /// variable `MERGE_DOMAIN_CONFIG` true, files of the same domain merged into one.
    pub fn from_texts(texts: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
        Config::from_texts_merging(texts, merge_domains_from_env()?)
    }

    /// [`from_texts`](Self::from_texts) with the merge decided by the caller: `merge` false
    /// refuses a domain defined in two files, naming both.
    pub fn from_texts_merging(
        texts: &[(PathBuf, String)],
        merge: bool,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (file, text) in texts {
            config.add(&file.display().to_string(), text, merge)?;
        }
        Ok(config)
    }

    /// Refuses a configuration with a limit that `store` cannot count (see
    /// [`check_policy`]): call it whenever a configuration is loaded or reloaded for a store, so
    /// that the refusal happens once, at load, and never as a per-request error.
    pub fn check(&self, store: &dyn Store) -> Result<(), ConfigError> {
        fn walk(
            store: &dyn Store,
            file: &str,
            node: &Descriptor,
            here: &str,
        ) -> Result<(), ConfigError> {
            if let Some(limit) = node.rate_limit.as_ref().filter(|l| !l.unlimited) {
                let unrepresentable = |source| ConfigError::Unrepresentable {
                    file: file.to_string(),
                    field: format!("{here}.rate_limit"),
                    source,
                };
                // check_tree refused every policy that cannot be built at parse time, but a
                // limit of zero, which has none and asks no store.
                if let Ok(policy) = limit.policy() {
                    check_policy(store, &policy).map_err(unrepresentable)?;
                }
            }
            for (index, child) in node.descriptors.iter().enumerate() {
                walk(store, file, child, &format!("{here}.descriptors[{index}]"))?;
            }
            Ok(())
        }
        let mut tops: Vec<(&str, usize, &Descriptor)> = self
            .domains
            .values()
            .flat_map(|d| {
                d.origins
                    .iter()
                    .zip(&d.descriptors)
                    .map(|((file, index), node)| (file.as_str(), *index, node))
            })
            .collect();
        // Sorted, so that the same configuration is always refused with the same message.
        tops.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (file, index, node) in tops {
            walk(store, file, node, &format!("descriptors[{index}]"))?;
        }
        Ok(())
    }

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

    /// The domains configured.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// Whether `domain` is configured (a request's own `limit` applies only in a known domain,
    /// as in envoyproxy/ratelimit).
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

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

/// A node's value, `None` for key-only (`value: ""` is no value, as in envoyproxy/ratelimit).
fn value_of(node: &Descriptor) -> Option<&str> {
    node.value.as_deref().filter(|v| !v.is_empty())
}

/// Two nodes of one level that would be the same rule.
fn alike(a: &Descriptor, b: &Descriptor) -> bool {
    a.key == b.key && value_of(a) == value_of(b)
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

/// Checks what serde cannot: keys not empty, limits expressible as policies, no two nodes of a
/// level alike, `share_threshold` only on a wildcard value.
fn check_tree(file: &str, level: &[Descriptor], path: &str) -> Result<(), ConfigError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: path
    value: /login
    rate_limit: { unit: minute, requests_per_unit: 5 }
    shadow_mode: true
  - key: path
    rate_limit: { unlimited: true }
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit: { unit: hour, requests_per_unit: 1000 }
"#;

    fn invalid(text: &str) -> (usize, String) {
        match Config::parse("bad.yaml", text) {
            Err(ConfigError::Invalid {
                line,
                message,
                file,
                ..
            }) => {
                assert_eq!(file, "bad.yaml");
                (line, message)
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn stat_keys_are_envoyproxys() {
        let config = Config::parse(
            "edge.yaml",
            r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: second, requests_per_unit: 10 }
  - key: path
    value: "/api/*"
    rate_limit: { unit: second, requests_per_unit: 10 }
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit: { unit: hour, requests_per_unit: 1000 }
      - key: user
        detailed_metric: true
        rate_limit: { unit: hour, requests_per_unit: 1000 }
      - key: route
        value_to_metric: true
        rate_limit: { unit: hour, requests_per_unit: 1000 }
"#,
        )
        .unwrap();
        let key = |entries: &[(&str, &str)]| {
            let entries: Vec<Entry> = entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
            config.limit_for("edge", &entries).unwrap().stat_key
        };
        // Key only: the key; a wildcard: the pattern, not the value.
        let ip = key(&[("remote_address", "10.0.0.1")]);
        assert_eq!(ip.full(), "edge.remote_address");
        assert_eq!(
            (ip.domain(), ip.key1(), ip.key2()),
            ("edge", "remote_address", None)
        );
        assert_eq!(key(&[("path", "/api/v1")]).full(), "edge.path_/api/*");
        let plan = key(&[("tenant", "acme"), ("plan", "free")]);
        assert_eq!(plan.full(), "edge.tenant.plan_free");
        assert_eq!((plan.key1(), plan.key2()), ("tenant", Some("plan_free")));
        // detailed_metric on the last node: the request's values at every level.
        assert_eq!(
            key(&[("tenant", "acme"), ("user", "alice")]).full(),
            "edge.tenant_acme.user_alice"
        );
        // value_to_metric: the request's value at that level only.
        assert_eq!(
            key(&[("tenant", "acme"), ("route", "a.b")]).full(),
            "edge.tenant.route_a.b"
        );
        // A dot in a value does not move the labels.
        let dotted = key(&[("tenant", "acme"), ("route", "a.b")]);
        assert_eq!(
            (dotted.key1(), dotted.key2()),
            ("tenant", Some("route_a.b"))
        );
    }

    #[test]
    fn matches_values_then_wildcards_then_nested() {
        let config = Config::parse("edge.yaml", EXAMPLE).unwrap();
        let ip = config
            .limit_for("edge", &[Entry::new("remote_address", "10.0.0.1")])
            .unwrap();
        assert_eq!(ip.rate_limit.requests_per_unit, 10);
        assert_eq!(
            ip.bucket,
            BucketKey::new("edge")
                .part("remote_address")
                .part("10.0.0.1")
                .finish()
        );
        assert_eq!(ip.field, "descriptors[0]");
        let login = config
            .limit_for("edge", &[Entry::new("path", "/login")])
            .unwrap();
        assert_eq!(login.rate_limit.unit, Unit::Minute);
        assert!(login.shadow_mode);
        let other = config
            .limit_for("edge", &[Entry::new("path", "/x")])
            .unwrap();
        assert!(other.rate_limit.unlimited);
        let plan = config
            .limit_for(
                "edge",
                &[Entry::new("tenant", "acme"), Entry::new("plan", "free")],
            )
            .unwrap();
        assert_eq!(plan.rate_limit.requests_per_unit, 1000);
        assert_eq!(
            plan.bucket,
            BucketKey::new("edge")
                .part("tenant")
                .part("acme")
                .part("plan")
                .part("free")
                .finish()
        );
        assert_eq!(plan.field, "descriptors[3].descriptors[0]");
        // No limit: an unknown key, a node without a limit, an unknown domain.
        assert!(
            config
                .limit_for("edge", &[Entry::new("user", "x")])
                .is_none()
        );
        assert!(
            config
                .limit_for("edge", &[Entry::new("tenant", "acme")])
                .is_none()
        );
        assert!(
            config
                .limit_for(
                    "edge",
                    &[Entry::new("tenant", "acme"), Entry::new("plan", "paid")]
                )
                .is_none()
        );
        assert!(
            config
                .limit_for("other", &[Entry::new("path", "/x")])
                .is_none()
        );
    }

    #[test]
    fn a_value_spelling_a_deeper_descriptor_has_its_own_bucket() {
        let config = Config::parse(
            "t.yaml",
            "domain: d\ndescriptors:\n  - key: t\n    rate_limit: { unit: second, requests_per_unit: 5 }\n    descriptors:\n      - key: sub\n        rate_limit: { unit: second, requests_per_unit: 1 }\n",
        )
        .unwrap();
        let shallow = config
            .limit_for("d", &[Entry::new("t", "t|sub=s")])
            .unwrap();
        let deep = config
            .limit_for("d", &[Entry::new("t", "t"), Entry::new("sub", "s")])
            .unwrap();
        assert_ne!(shallow.bucket, deep.bucket);
        let long = config
            .limit_for("d", &[Entry::new("t", &"v".repeat(100_000))])
            .unwrap();
        assert!(long.bucket.len() <= ratelimit_core::MAX_KEY_LEN);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let (line, message) = invalid(
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
        );
        assert_eq!(line, 5);
        assert!(
            message.contains("descriptors[0].rate_limit.unit"),
            "{message}"
        );
        assert!(message.contains("fortnight"), "{message}");

        let (_, message) = invalid(
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1, replaces: [{ name: \"\" }] }\n",
        );
        assert!(message.contains("replaces"), "{message}");
        let (_, message) = invalid(
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { name: x, unit: second, requests_per_unit: 1, replaces: [{ name: x }] }\n",
        );
        assert!(message.contains("own name"), "{message}");
        let (line, message) = invalid(
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1 }\n    shadow_modes: true\n",
        );
        assert_eq!(line, 5);
        assert!(message.contains("shadow_modes"), "{message}");

        let (line, message) =
            invalid("domain: edge\ndescriptors:\n  - key: a\n    rate_limits: {}\n");
        assert_eq!(line, 4);
        assert!(message.contains("rate_limits"), "{message}");

        let (_, message) = invalid("descriptors: []\n");
        assert!(message.contains("domain"), "{message}");

        let (line, _) = invalid("domain: edge\ndescriptors:\n  - key: [unclosed\n");
        assert!(line >= 3);
    }

    #[test]
    fn whole_file_conflicts_are_refused() {
        let duplicate = "domain: edge\ndescriptors:\n  - key: a\n  - key: a\n";
        assert!(matches!(
            Config::parse("dup.yaml", duplicate),
            Err(ConfigError::Conflict { .. })
        ));
        let mut config = Config::parse("one.yaml", "domain: edge\n").unwrap();
        let again = config.add("two.yaml", "domain: edge\n", false);
        match again {
            Err(ConfigError::Conflict { file, message }) => {
                assert_eq!(file, "two.yaml");
                assert!(message.contains("one.yaml"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loads_a_directory_of_domains() {
        let dir = std::env::temp_dir().join(format!("rl-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("edge.yaml"), EXAMPLE).unwrap();
        std::fs::write(dir.join("mesh.yml"), "domain: mesh\ndescriptors:\n  - key: caller\n    rate_limit: { unit: second, requests_per_unit: 50 }\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
        let config = Config::load(&dir).unwrap();
        let mut domains: Vec<&str> = config.domains().collect();
        domains.sort();
        assert_eq!(domains, ["edge", "mesh"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn limit_of(config: &Config, entries: &[(&str, &str)]) -> Option<u32> {
        let entries: Vec<Entry> = entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
        config
            .limit_for("d", &entries)
            .map(|m| m.rate_limit.requests_per_unit)
    }

    #[test]
    fn matching_is_envoys_get_limit() {
        let config = Config::parse(
            "d.yaml",
            r#"
domain: d
descriptors:
  - key: path
    value: /api/*/orders
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: path
    value: /api/*
    rate_limit: { unit: second, requests_per_unit: 2 }
  - key: path
    value: /api/admin
    rate_limit: { unit: second, requests_per_unit: 3 }
  - key: path
    rate_limit: { unit: second, requests_per_unit: 4 }
  - key: host
    value: "*.example.*"
    rate_limit: { unit: SECOND, requests_per_unit: 5 }
  - key: tenant
    value: acme
    descriptors:
      - key: plan
        value: paid
        rate_limit: { unit: Minute, requests_per_unit: 6 }
  - key: tenant
    rate_limit: { unit: second, requests_per_unit: 7 }
    descriptors:
      - key: plan
        rate_limit: { unit: second, requests_per_unit: 8 }
"#,
        )
        .unwrap();
        // Exact value first, then the first wildcard in file order, then key only.
        assert_eq!(limit_of(&config, &[("path", "/api/admin")]), Some(3));
        assert_eq!(limit_of(&config, &[("path", "/api/7/orders")]), Some(1));
        assert_eq!(limit_of(&config, &[("path", "/api/7")]), Some(2));
        assert_eq!(limit_of(&config, &[("path", "/web")]), Some(4));
        assert_eq!(limit_of(&config, &[("host", "a.example.org")]), Some(5));
        assert_eq!(limit_of(&config, &[("host", "example.org")]), None);
        // A limit applies at the request's depth only.
        assert_eq!(limit_of(&config, &[("tenant", "other")]), Some(7));
        assert_eq!(
            limit_of(&config, &[("tenant", "other"), ("plan", "x")]),
            Some(8)
        );
        assert_eq!(limit_of(&config, &[("tenant", "acme")]), None);
        // Nor above it: a deeper request does not fall back to a shallower node's limit.
        assert_eq!(
            limit_of(&config, &[("path", "/api/admin"), ("x", "y")]),
            None
        );
        // No backtracking: tenant=acme matched its own node, whose children have no plan=free;
        // the key-only tenant node (whose plan would match) is not tried instead.
        assert_eq!(
            limit_of(&config, &[("tenant", "acme"), ("plan", "free")]),
            None
        );
        assert_eq!(
            limit_of(&config, &[("tenant", "acme"), ("plan", "paid")]),
            Some(6)
        );
        let paid = config
            .limit_for(
                "d",
                &[Entry::new("tenant", "acme"), Entry::new("plan", "paid")],
            )
            .unwrap();
        assert_eq!(paid.rate_limit.unit, Unit::Minute);
        assert_eq!(paid.field, "descriptors[5].descriptors[0]");
    }

    #[test]
    fn share_threshold_puts_every_matching_value_in_one_bucket() {
        let text = |share: bool| {
            format!(
                "domain: d\ndescriptors:\n  - key: files\n    value: files/*\n    share_threshold: {share}\n    rate_limit: {{ unit: hour, requests_per_unit: 10 }}\n"
            )
        };
        let bucket = |config: &Config, value: &str| {
            config
                .limit_for("d", &[Entry::new("files", value)])
                .unwrap()
                .bucket
        };
        let shared = Config::parse("d.yaml", &text(true)).unwrap();
        assert_eq!(
            bucket(&shared, "files/a.pdf"),
            bucket(&shared, "files/b.csv")
        );
        assert_ne!(bucket(&shared, "files/a.pdf"), bucket(&shared, "files/*"));
        let apart = Config::parse("d.yaml", &text(false)).unwrap();
        assert_ne!(bucket(&apart, "files/a.pdf"), bucket(&apart, "files/b.csv"));
        let refused = Config::parse(
            "d.yaml",
            "domain: d\ndescriptors:\n  - key: files\n    value: files\n    share_threshold: true\n",
        );
        assert!(
            matches!(&refused, Err(ConfigError::Conflict { message, .. }) if message.contains("share_threshold")),
            "{refused:?}"
        );
    }

    #[test]
    fn zero_replaces_and_the_other_fields_load() {
        let config = Config::parse(
            "d.yaml",
            r#"
domain: d
descriptors:
  - key: remote_address
    value: 50.0.0.5
    rate_limit: { unit: second, requests_per_unit: 0 }
  - key: user
    quota_mode: true
    detailed_metric: true
    value_to_metric: true
    rate_limit:
      name: per-user
      unit: day
      requests_per_unit: 100
      replaces: [{ name: global }]
"#,
        )
        .unwrap();
        let blocked = config
            .limit_for("d", &[Entry::new("remote_address", "50.0.0.5")])
            .unwrap();
        assert!(blocked.rate_limit.admits_nothing());
        let user = config.limit_for("d", &[Entry::new("user", "u")]).unwrap();
        assert!(user.quota_mode);
        assert_eq!(user.rate_limit.replaces, ["global"]);
        assert_eq!(user.rate_limit.name.as_deref(), Some("per-user"));
    }

    #[test]
    fn files_of_one_domain_merge_only_when_asked() {
        let texts = vec![
            (
                PathBuf::from("a.yaml"),
                "domain: d\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 1 }\n".to_string(),
            ),
            (
                PathBuf::from("b.yaml"),
                "domain: d\ndescriptors:\n  - key: b\n    rate_limit: { unit: second, requests_per_unit: 2 }\n".to_string(),
            ),
        ];
        match Config::from_texts_merging(&texts, false) {
            Err(ConfigError::Conflict { file, message }) => {
                assert_eq!(file, "b.yaml");
                assert!(message.contains("a.yaml"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let merged = Config::from_texts_merging(&texts, true).unwrap();
        assert_eq!(limit_of(&merged, &[("a", "x")]), Some(1));
        assert_eq!(limit_of(&merged, &[("b", "x")]), Some(2));
        assert_eq!(
            merged
                .limit_for("d", &[Entry::new("b", "x")])
                .unwrap()
                .field,
            "descriptors[0]"
        );
        let mut clash = texts.clone();
        clash[1].1 = clash[0].1.clone();
        match Config::from_texts_merging(&clash, true) {
            Err(ConfigError::Conflict { file, message }) => {
                assert_eq!(file, "b.yaml");
                assert!(message.contains("a.yaml: descriptors[0]"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_shipped_configuration_loads_with_its_features() {
        let config = Config::parse(
            "examples/config/ratelimit.yaml",
            include_str!("../../config/ratelimit.yaml"),
        )
        .unwrap();
        let edge = |entries: &[(&str, &str)]| {
            let entries: Vec<Entry> = entries.iter().map(|(k, v)| Entry::new(k, v)).collect();
            config.limit_for("edge", &entries).map(|m| {
                (
                    m.rate_limit.requests_per_unit,
                    m.rate_limit.admits_nothing(),
                    m.bucket,
                )
            })
        };
        assert!(edge(&[("remote_address", "192.0.2.66")]).unwrap().1);
        let a = edge(&[("path", "/api/a/export")]).unwrap();
        let b = edge(&[("path", "/api/b/c/export")]).unwrap();
        assert_eq!((a.0, &a.2), (10, &b.2));
        assert_eq!(edge(&[("path", "/api/a/import")]), None);
    }
}
