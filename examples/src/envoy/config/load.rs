//! Reading a configuration: files and directories, parsing, merging domains, and the check of a
//! loaded configuration against the store that will count it.
//!
//! Apart from matching because it runs once per load or reload, where every error must name the
//! file, line and field; matching runs per request and never fails.

use std::path::{Path, PathBuf};

use ratelimit_core::{Store, check_policy};

use super::descriptor::{DomainFile, alike, check_tree};
use super::{Config, ConfigError, Descriptor};

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

impl Config {
    /// Parses one file's text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.add(file, text, false)?;
        Ok(config)
    }

    /// Adds one file's domain; `merge` lets it extend a domain already read.
    pub(super) fn add(&mut self, file: &str, text: &str, merge: bool) -> Result<(), ConfigError> {
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
}
