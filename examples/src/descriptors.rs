//! The rate-limit descriptor configuration of envoyproxy/ratelimit, so that existing files work
//! unchanged: one domain per file, nested descriptors with a key and an optional value, and a
//! `rate_limit` of `requests_per_unit` per `unit`, or `unlimited`; `shadow_mode` per descriptor.
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

/// The unit of a `rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl Unit {
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
    /// Requests admitted per unit (0 when unlimited).
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
    /// Never limited (still counted).
    pub unlimited: bool,
    /// The limit's name, reported in responses.
    pub name: Option<String>,
}

impl RateLimit {
    /// The GCRA policy of this limit: `requests_per_unit` per unit, all of it available at once
    /// (the burst is the count, as a fixed window would allow).
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        Policy::new(self.requests_per_unit, self.unit.duration())
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
    // Accepted for compatibility; replacing limits across descriptors is not supported.
    #[serde(default)]
    replaces: Vec<serde_norway::Value>,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = String;

    fn try_from(raw: RawRateLimit) -> Result<Self, String> {
        if !raw.replaces.is_empty() {
            return Err("rate_limit.replaces: not supported".into());
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
            });
        }
        let unit = raw
            .unit
            .ok_or("rate_limit.unit: missing (or `unlimited: true`)")?;
        let requests_per_unit = raw
            .requests_per_unit
            .ok_or("rate_limit.requests_per_unit: missing")?;
        if requests_per_unit == 0 {
            return Err("rate_limit.requests_per_unit: must be at least 1".into());
        }
        Ok(RateLimit {
            requests_per_unit,
            unit,
            unlimited: false,
            name: raw.name,
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
    /// Counted and reported, never enforced.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Accepted for compatibility (per-value metrics); no effect.
    #[serde(default)]
    pub detailed_metric: bool,
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
    /// The limit.
    pub rate_limit: &'a RateLimit,
    /// Whether the matched node is in shadow mode.
    pub shadow_mode: bool,
    /// The bucket's key: the domain and every entry, so each value of a wildcard node has its own.
    pub bucket: String,
    /// The descriptor's path in its file (`descriptors[0].descriptors[2]`), for messages.
    pub field: String,
}

/// Every domain's descriptor tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    domains: HashMap<String, (String, Vec<Descriptor>)>,
}

impl Config {
    /// Parses one file's text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.add(file, text)?;
        Ok(config)
    }

    fn add(&mut self, file: &str, text: &str) -> Result<(), ConfigError> {
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
        if let Some((other, _)) = self.domains.get(&parsed.domain) {
            return Err(ConfigError::Conflict {
                file: file.to_string(),
                message: format!("domain {:?} is also defined in {other}", parsed.domain),
            });
        }
        self.domains
            .insert(parsed.domain, (file.to_string(), parsed.descriptors));
        Ok(())
    }

    /// Reads a file, or every `.yaml` / `.yml` file of a directory (one domain each).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_texts(&Config::read(path)?)
    }

    /// The texts [`load`](Self::load) parses: the file, or every `.yaml` / `.yml` file of the
    /// directory, in name order, with their names. Symbolic links are followed (a Kubernetes
    /// ConfigMap volume is links into a directory that is swapped whole).
    pub fn read(path: &Path) -> Result<Vec<(PathBuf, String)>, ConfigError> {
        let io = |source| ConfigError::Io {
            file: path.to_owned(),
            source,
        };
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let file = entry.map_err(io)?.path();
                if matches!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) {
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

    /// Parses texts read by [`read`](Self::read), one domain each.
    pub fn from_texts(texts: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (file, text) in texts {
            config.add(&file.display().to_string(), text)?;
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
            level: &[Descriptor],
            path: &str,
        ) -> Result<(), ConfigError> {
            for (index, node) in level.iter().enumerate() {
                let here = format!("{path}[{index}]");
                if let Some(limit) = node.rate_limit.as_ref().filter(|l| !l.unlimited) {
                    let unrepresentable = |source| ConfigError::Unrepresentable {
                        file: file.to_string(),
                        field: format!("{here}.rate_limit"),
                        source,
                    };
                    // check_tree refused every policy that cannot be built at parse time.
                    if let Ok(policy) = limit.policy() {
                        check_policy(store, &policy).map_err(unrepresentable)?;
                    }
                }
                walk(
                    store,
                    file,
                    &node.descriptors,
                    &format!("{here}.descriptors"),
                )?;
            }
            Ok(())
        }
        let mut domains: Vec<_> = self.domains.values().collect();
        // Sorted, so that the same configuration is always refused with the same message.
        domains.sort_by(|a, b| a.0.cmp(&b.0));
        for (file, descriptors) in domains {
            walk(store, file, descriptors, "descriptors")?;
        }
        Ok(())
    }

    /// The domains configured.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// The limit for a request's descriptor in `domain`: each entry in turn matches the node with
    /// its key and value, or else the node with its key and no value; the node matched by the last
    /// entry gives the limit. `None` when any entry has no node, or the last node has no limit.
    pub fn limit_for(&self, domain: &str, entries: &[Entry]) -> Option<Matched<'_>> {
        let (_, mut level) = self.domains.get(domain).map(|(f, d)| (f, d.as_slice()))?;
        let mut node = None;
        let mut bucket = BucketKey::new(domain);
        let mut field = String::from("descriptors");
        for entry in entries {
            let (index, found) = level
                .iter()
                .enumerate()
                .find(|(_, d)| {
                    d.key == entry.key && d.value.as_deref() == Some(entry.value.as_str())
                })
                .or_else(|| {
                    level
                        .iter()
                        .enumerate()
                        .find(|(_, d)| d.key == entry.key && d.value.is_none())
                })?;
            bucket.push(&entry.key);
            bucket.push(&entry.value);
            if node.is_some() {
                field.push_str(".descriptors");
            }
            let _ = write!(field, "[{index}]");
            level = &found.descriptors;
            node = Some(found);
        }
        let node = node?;
        Some(Matched {
            rate_limit: node.rate_limit.as_ref()?,
            shadow_mode: node.shadow_mode,
            bucket: bucket.finish(),
            field,
        })
    }
}

/// Checks what serde cannot: keys not empty, limits expressible as policies, no two nodes of a
/// level alike.
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
            if !limit.unlimited {
                limit
                    .policy()
                    .map_err(|e| invalid(format!("{here}.rate_limit: {e}")))?;
            }
        }
        if level[..index]
            .iter()
            .any(|other| other.key == node.key && other.value == node.value)
        {
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
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: second, requests_per_unit: 0 }\n",
        );
        assert!(
            message.contains("descriptors[0]: rate_limit.requests_per_unit: must be at least 1"),
            "{message}"
        );

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
        let again = config.add("two.yaml", "domain: edge\n");
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
}
