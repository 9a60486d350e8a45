//! Reloading a configuration when its files change: only complete files, and only valid ones.
//!
//! The kernel says when something changed: the reloader watches a *watch root* through the
//! `notify` crate (inotify on Linux), by default the configuration path itself, or a runtime root
//! above it (envoyproxy/ratelimit's `RUNTIME_WATCH_ROOT`, whose `current -> v2` link is swapped
//! to publish a new version). A directory is watched recursively; a file or a symbolic link is
//! watched through the directory that holds it too, because a file replaced by a rename or a
//! link pointed elsewhere changes that directory, not the old file the watch was following.
//!
//! A file read while it is being written can be a valid prefix of the new file (the first
//! descriptors of a domain, say), and loading it would silently drop the rest. So a change is
//! loaded only once it has *settled*: an event (re)starts a settle timer, and the configuration
//! is parsed only when it has read the same text at the start and at the end of a settle period
//! with no event in between. What it parses is exactly the text it compared, never a later read.
//!
//! Files are compared by content, not by modification time, and read through their symbolic
//! links. A Kubernetes ConfigMap volume is a set of links (`ratelimit.yaml -> ..data/ratelimit.yaml`,
//! `..data -> ..2026_12_03_06_00_00.1234`) whose `..data` link is replaced atomically by a new
//! timestamped directory: the links themselves never change, the files they lead to do, and a
//! content comparison sees that whatever the timestamps say. The rename of `..data` is an event
//! on the ConfigMap's directory, which is watched whether the configuration path is that
//! directory or a file in it.
//!
//! A configuration that does not parse, or that has a limit the store cannot count, is refused
//! with its file, line and field, and the running configuration stays.
//!
//! This file holds the reloader and its settings; what the kernel is asked to watch and which
//! events wake it are in `events.rs`, and the loop that reads, settles and loads in `settle.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use ratelimit_core::Store;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::envoy::config::Config;

mod events;
mod settle;

use events::Armed;
#[cfg(test)]
use events::wakes;

/// Why a watcher cannot start.
#[derive(Debug, Error)]
pub enum WatchError {
    /// Polling every zero milliseconds is a busy loop, not a reload interval.
    #[error("the reload interval must be longer than zero (leave reloading off instead)")]
    ZeroInterval,
    /// [`Reloader::spawn`] was called outside a Tokio runtime, which its task needs.
    #[error("the configuration watcher needs a Tokio runtime to run on")]
    NoRuntime,
    /// The watch root does not exist or cannot be looked at.
    #[error("cannot watch {}: {source}", path.display())]
    Missing {
        /// The watch root.
        path: PathBuf,
        /// Why it could not be looked at.
        source: std::io::Error,
    },
    /// The kernel refused the watch: the path went away, it is not readable, or a limit is
    /// reached (on Linux `fs.inotify.max_user_watches` or `fs.inotify.max_user_instances`).
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The path the kernel was asked to watch.
        path: PathBuf,
        /// What `notify` reported.
        source: notify::Error,
    },
}

/// What the watcher has done, for tests that wait for a reload; `/metrics` has the same as
/// envoyproxy/ratelimit's `ratelimit_service_config_load_success` and `_error`
/// ([`metrics`]).
#[derive(Debug, Default)]
pub struct ReloadStats {
    // Relaxed: independent counters, read for display and polling only.
    loaded: AtomicU64,
    refused: AtomicU64,
    reads: AtomicU64,
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

    /// Times the configuration was read: at the start, on events, at the end of settle
    /// periods and on polls (a read costs one pass over every file).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// Watches a configuration path and replaces the running configuration with each settled,
/// valid change.
pub struct Reloader {
    path: PathBuf,
    watch_root: Option<PathBuf>,
    ignore_dotfiles: bool,
    every: Duration,
    settle: Duration,
    store: Option<Arc<dyn Store>>,
    loaded: Option<Vec<(PathBuf, String)>>,
    stats: Arc<ReloadStats>,
}

impl Reloader {
    /// Reads `path` (a file or a directory of them) when the kernel reports a change under the
    /// watch root (by default `path`; see [`watch_root`](Self::watch_root)), and also every
    /// `every` as a safety net, with a settle period of one second unless set with
    /// [`settle`](Self::settle).
    ///
    /// The poll stays because events do not always come: network and FUSE file systems (NFS,
    /// SMB, some CSI volumes) report nothing for changes made on another machine, and a
    /// kernel queue that overflows drops events. Make `every` long (a minute) where events are
    /// reliable: it then costs one read of the configuration per interval.
    pub fn new(path: PathBuf, every: Duration) -> Result<Self, WatchError> {
        if every.is_zero() {
            return Err(WatchError::ZeroInterval);
        }
        Ok(Reloader {
            path,
            watch_root: None,
            ignore_dotfiles: false,
            every,
            settle: Duration::from_secs(1),
            store: None,
            loaded: None,
            stats: Arc::new(ReloadStats::default()),
        })
    }

    /// Watches `root` for changes instead of the configuration path: envoyproxy/ratelimit's
    /// `RUNTIME_ROOT` where `RUNTIME_WATCH_ROOT` is true, a directory or the `current` link
    /// whose swap to a new version directory is then seen.
    pub fn watch_root(mut self, root: PathBuf) -> Self {
        self.watch_root = Some(root);
        self
    }

    /// Leaves out files whose names start with a dot, in reading and in watching
    /// (`RUNTIME_IGNOREDOTFILES`, see [`Config::read_with`]).
    pub fn ignore_dotfiles(mut self, ignore: bool) -> Self {
        self.ignore_dotfiles = ignore;
        self
    }

    /// How long a changed text must stay the same, with no event, before it is parsed. A
    /// writer that pauses for longer than this in the middle of a file can still have its
    /// prefix read: write configurations by renaming a complete file into place where you can.
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
    /// returned task is aborted or dropped with the runtime. Fails if the watch root is missing,
    /// if the kernel refuses to watch it, or outside a Tokio runtime.
    pub fn spawn(
        self,
        config: Arc<RwLock<Arc<Config>>>,
    ) -> Result<tokio::task::JoinHandle<()>, WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        // One waiting wake-up says all there is to say: something changed since the last look.
        let (wake, woken) = mpsc::channel(1);
        let root = self.root().to_owned();
        let armed = Armed::new(&root, &wake, self.ignore_dotfiles)?;
        Ok(runtime.spawn(self.run(config, armed, wake, woken)))
    }

    /// What the kernel watches: the watch root if set, else the configuration path.
    fn root(&self) -> &Path {
        self.watch_root.as_deref().unwrap_or(&self.path)
    }
}

/// Watches `path` and puts each settled, valid change in `config` (see [`Reloader`] for the
/// events, the poll every `every`, the settle period and the store check).
pub fn watch(
    path: PathBuf,
    config: Arc<RwLock<Arc<Config>>>,
    every: Duration,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    Reloader::new(path, every)?.spawn(config)
}

#[cfg(test)]
mod tests;
