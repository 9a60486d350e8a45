//! Reloading a configuration when its files change: only complete files, and only valid ones.
//!
//! A file read while it is being written can be a valid prefix of the new file (the first
//! descriptors of a domain, say), and loading it would silently drop the rest. So a change is
//! loaded only once it has *settled*: the watcher reads the whole configuration on every tick,
//! and parses a new text only after it has read the same text for a settle period. What it parses
//! is exactly the text it compared, never a later read.
//!
//! Files are compared by content, not by modification time, and read through their symbolic
//! links. A Kubernetes ConfigMap volume is a set of links (`ratelimit.yaml -> ..data/ratelimit.yaml`,
//! `..data -> ..2026_12_03_06_00_00.1234`) whose `..data` link is replaced atomically by a new
//! timestamped directory: the links themselves never change, the files they lead to do, and a
//! content comparison sees that whatever the timestamps say.
//!
//! A configuration that does not parse, or that has a limit the store cannot count, is refused
//! with its file, line and field, and the running configuration stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use ratelimit_core::Store;
use thiserror::Error;

use crate::envoy::config::{Config, ConfigError};
use crate::envoy::metrics;

/// Why a watcher cannot start.
#[derive(Debug, Error)]
pub enum WatchError {
    /// Polling every zero milliseconds is a busy loop, not a reload interval.
    #[error("the reload interval must be longer than zero (leave reloading off instead)")]
    ZeroInterval,
}

/// What the watcher has done, for tests that wait for a reload; `/metrics` has the same as
/// envoyproxy/ratelimit's `ratelimit_service_config_load_success` and `_error`
/// ([`metrics`](crate::envoy::metrics)).
#[derive(Debug, Default)]
pub struct ReloadStats {
    // Relaxed: independent counters, read for display and polling only.
    loaded: AtomicU64,
    refused: AtomicU64,
}

impl ReloadStats {
    /// Configurations loaded since the start (the first one not counted).
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Settled configurations refused (invalid, unreadable, or not countable by the store).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// What the watcher read on one tick: every file's name and text, or why it could not.
#[derive(Debug, PartialEq, Eq)]
enum Snapshot {
    Files(Vec<(PathBuf, String)>),
    Unreadable(String),
}

async fn snapshot(path: &std::path::Path) -> Snapshot {
    let path = path.to_owned();
    // Reading files blocks: off the runtime's workers.
    match tokio::task::spawn_blocking(move || Config::read(&path)).await {
        Ok(Ok(files)) => Snapshot::Files(files),
        Ok(Err(error)) => Snapshot::Unreadable(error.to_string()),
        Err(error) => Snapshot::Unreadable(error.to_string()),
    }
}

/// Watches a configuration path and replaces the running configuration with each settled,
/// valid change.
pub struct Reloader {
    path: PathBuf,
    every: Duration,
    settle: Duration,
    store: Option<Arc<dyn Store>>,
    loaded: Option<Vec<(PathBuf, String)>>,
    stats: Arc<ReloadStats>,
}

impl Reloader {
    /// Watches `path` (a file or a directory of them) every `every`, with a settle period of
    /// the larger of `every` and one second unless set with [`settle`](Self::settle).
    pub fn new(path: PathBuf, every: Duration) -> Result<Self, WatchError> {
        if every.is_zero() {
            return Err(WatchError::ZeroInterval);
        }
        Ok(Reloader {
            path,
            every,
            settle: every.max(Duration::from_secs(1)),
            store: None,
            loaded: None,
            stats: Arc::new(ReloadStats::default()),
        })
    }

    /// How long a changed text must stay the same before it is parsed. A writer that pauses
    /// for longer than this in the middle of a file can still have its prefix read: write
    /// configurations by renaming a complete file into place where you can.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Refuses configurations with a limit `store` cannot count ([`Config::check`]).
    pub fn checked_for(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The texts the running configuration was parsed from ([`Config::read`]): the watcher then
    /// reloads only when they change. Without them, the first settled read is loaded once.
    pub fn loaded(mut self, texts: Vec<(PathBuf, String)>) -> Self {
        self.loaded = Some(texts);
        self
    }

    /// The watcher's counters.
    pub fn stats(&self) -> Arc<ReloadStats> {
        self.stats.clone()
    }

    /// Starts watching; each settled valid change replaces what `config` holds. Stops when the
    /// returned task is aborted or dropped with the runtime.
    pub fn spawn(self, config: Arc<RwLock<Arc<Config>>>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(config))
    }

    async fn run(self, config: Arc<RwLock<Arc<Config>>>) {
        // Watching: both outcomes are on `/metrics` from now on, at zero until they happen.
        metrics::register_config_loads();
        let mut applied = self.loaded.clone().map(Snapshot::Files);
        // A text read that differs from the applied one, and since when it has stayed the same.
        let mut pending: Option<(Snapshot, Instant)> = None;
        let mut interval = tokio::time::interval(self.every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = snapshot(&self.path).await;
            if applied.as_ref() == Some(&now) {
                pending = None;
                continue;
            }
            match &pending {
                Some((seen, since)) if *seen == now => {
                    if since.elapsed() < self.settle {
                        continue;
                    }
                }
                _ => {
                    // New, or still changing: wait until it stays the same.
                    pending = Some((now, Instant::now()));
                    continue;
                }
            }
            pending = None;
            match self.parse(&now) {
                Ok(loaded) => {
                    *config.write() = Arc::new(loaded);
                    self.stats.loaded.fetch_add(1, Ordering::Relaxed);
                    metrics::record_config_loaded();
                    tracing::info!(path = %self.path.display(), "configuration reloaded");
                }
                Err(error) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    metrics::record_config_refused();
                    tracing::error!(%error, "configuration refused; the running one stays");
                }
            }
            // Refused or not, this text has been judged: judge it again only once it changes.
            applied = Some(now);
        }
    }

    fn parse(&self, snapshot: &Snapshot) -> Result<Config, String> {
        let files = match snapshot {
            Snapshot::Files(files) => files,
            Snapshot::Unreadable(error) => return Err(error.clone()),
        };
        let config = Config::from_texts(files).map_err(|e| e.to_string())?;
        if let Some(store) = &self.store {
            config
                .check(store.as_ref())
                .map_err(|e: ConfigError| e.to_string())?;
        }
        Ok(config)
    }
}

/// Watches `path` every `every` and puts each settled, valid change in `config` (see
/// [`Reloader`] for the settle period and the store check).
pub fn watch(
    path: PathBuf,
    config: Arc<RwLock<Arc<Config>>>,
    every: Duration,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    Ok(Reloader::new(path, every)?.spawn(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::envoy::config::Entry;

    fn limit(config: &RwLock<Arc<Config>>) -> Option<u32> {
        config
            .read()
            .limit_for("edge", &[Entry::new("remote_address", "1.2.3.4")])
            .map(|m| m.rate_limit.requests_per_unit)
    }

    fn file(per_second: &str) -> String {
        format!(
            "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {{ unit: second, requests_per_unit: {per_second} }}\n"
        )
    }

    /// Polls `condition` every 10 ms for up to 30 s.
    async fn eventually(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn a_zero_interval_is_refused() {
        assert!(matches!(
            Reloader::new(PathBuf::from("x.yaml"), Duration::ZERO),
            Err(WatchError::ZeroInterval)
        ));
    }

    #[tokio::test]
    async fn a_broken_file_keeps_the_running_configuration() {
        let dir = std::env::temp_dir().join(format!("rl-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.yaml");
        std::fs::write(&path, file("10")).unwrap();
        let config = Arc::new(RwLock::new(Arc::new(Config::load(&path).unwrap())));
        let reloader = Reloader::new(path.clone(), Duration::from_millis(20))
            .unwrap()
            .settle(Duration::from_millis(60))
            .loaded(Config::read(&path).unwrap());
        let stats = reloader.stats();
        let task = reloader.spawn(config.clone());
        std::fs::write(&path, file("zero")).unwrap();
        assert!(eventually(|| stats.refused() == 1).await, "never judged");
        assert_eq!(
            limit(&config),
            Some(10),
            "a broken file replaced the configuration"
        );
        std::fs::write(&path, file("20")).unwrap();
        assert!(
            eventually(|| limit(&config) == Some(20)).await,
            "a fixed file was not loaded"
        );
        assert_eq!(stats.loaded(), 1);
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
