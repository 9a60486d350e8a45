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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use parking_lot::RwLock;
use ratelimit_core::Store;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::envoy::config::{Config, ConfigError};
use crate::envoy::metrics;

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

/// What the watcher read at one look: every file's name and text, or why it could not.
#[derive(Debug, PartialEq, Eq)]
enum Snapshot {
    Files(Vec<(PathBuf, String)>),
    Unreadable(String),
}

async fn snapshot(path: &Path, ignore_dotfiles: bool) -> Snapshot {
    let path = path.to_owned();
    // Reading files blocks: off the runtime's workers.
    match tokio::task::spawn_blocking(move || Config::read_with(&path, ignore_dotfiles)).await {
        Ok(Ok(files)) => Snapshot::Files(files),
        Ok(Err(error)) => Snapshot::Unreadable(error.to_string()),
        Err(error) => Snapshot::Unreadable(error.to_string()),
    }
}

/// Whether `event` can mean the configuration changed.
///
/// Opening and reading files are events too, the reloader's own reads among them: they would
/// restart the settle timer forever. A write that completes (`Close(Write)`) is kept. With
/// `ignore_dotfiles`, changes to files whose names start with one dot (editors' swap files,
/// `.git`) are dropped, but not to names starting with two: Kubernetes' `..data` link and its
/// `..<timestamp>` directories are how a ConfigMap update arrives. An error (the kernel's queue
/// overflowed, say) may hide a change, so it wakes the reloader too.
fn wakes(event: &notify::Result<Event>, ignore_dotfiles: bool) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(_) => return true,
    };
    if event.need_rescan() {
        return true;
    }
    if let EventKind::Access(kind) = event.kind {
        if kind != AccessKind::Close(AccessMode::Write) {
            return false;
        }
    }
    let dotfile = |path: &PathBuf| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && !n.starts_with(".."))
    };
    !(ignore_dotfiles && !event.paths.is_empty() && event.paths.iter().all(dotfile))
}

/// The paths to ask the kernel to watch for `root`, and how.
fn plan(root: &Path) -> Vec<(PathBuf, RecursiveMode)> {
    let link = std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink());
    if root.is_dir() && !link {
        return vec![(root.to_owned(), RecursiveMode::Recursive)];
    }
    // A file replaced by a rename, or a link swapped to a new target, is an event in the
    // directory that holds it: a watch on the file itself follows the old inode.
    let parent = match root.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut plan = vec![(parent, RecursiveMode::NonRecursive)];
    if link {
        // What the link leads to now, for changes made in place there; re-armed when the link
        // moves (see `Armed::follow`).
        let mode = if root.is_dir() {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        plan.push((root.to_owned(), mode));
    }
    plan
}

/// What a watch root is: where it leads, and (on Unix) the inode there, so that a directory
/// deleted and made again under the same name is watched again too.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    target: PathBuf,
    inode: u64,
}

impl Identity {
    fn of(root: &Path) -> std::io::Result<Self> {
        let target = std::fs::canonicalize(root)?;
        let metadata = std::fs::metadata(&target)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = {
            drop(metadata);
            0
        };
        Ok(Identity { target, inode })
    }
}

/// A kernel watch on a watch root, and what the root was when it was set up.
struct Armed {
    // Kept for its drop: the watch ends with it.
    _watcher: RecommendedWatcher,
    target: Option<Identity>,
    /// Set when a watched path itself was removed or moved away: its watch is gone, even if a
    /// new directory under the same name got the same inode number back.
    stale: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether `event` removes or moves away one of the `watched` paths themselves.
fn ends_watch(event: &notify::Result<Event>, watched: &[PathBuf]) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    let Ok(event) = event else { return false };
    let gone = matches!(
        event.kind,
        EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::From | RenameMode::Any | RenameMode::Both
            ))
    );
    gone && event.paths.iter().any(|path| watched.contains(path))
}

impl Armed {
    fn new(
        root: &Path,
        wake: &mpsc::Sender<()>,
        ignore_dotfiles: bool,
    ) -> Result<Self, WatchError> {
        let target = Identity::of(root).map_err(|source| WatchError::Missing {
            path: root.to_owned(),
            source,
        })?;
        let plan = plan(root);
        // As the watcher names them in its events: made absolute, links not followed.
        let watched: Vec<PathBuf> = plan
            .iter()
            .filter_map(|(path, _)| std::path::absolute(path).ok())
            .collect();
        let stale = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (wake, ended) = (wake.clone(), stale.clone());
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            if let Err(error) = &event {
                tracing::warn!(%error, "configuration watch; reading the configuration again");
            }
            if ends_watch(&event, &watched) {
                ended.store(true, Ordering::Relaxed);
            }
            if wakes(&event, ignore_dotfiles) {
                // Full: a wake-up is already waiting, which is all this one would say.
                let _ = wake.try_send(());
            }
        })
        .map_err(|source| WatchError::Watch {
            path: root.to_owned(),
            source,
        })?;
        for (path, mode) in plan {
            watcher
                .watch(&path, mode)
                .map_err(|source| WatchError::Watch { path, source })?;
        }
        Ok(Armed {
            _watcher: watcher,
            target: Some(target),
            stale,
        })
    }

    /// Watches again where `root` leads now, if that changed (a swapped `current` link whose old
    /// target the recursive watch was following, a directory made anew). Failing, the old watch
    /// stays and the poll covers the gap until the next try.
    fn follow(&mut self, root: &Path, wake: &mpsc::Sender<()>, ignore_dotfiles: bool) {
        if !self.stale.load(Ordering::Relaxed) && Identity::of(root).ok() == self.target {
            return;
        }
        match Armed::new(root, wake, ignore_dotfiles) {
            Ok(armed) => *self = armed,
            Err(error) => {
                // Not the same failure again on every look.
                self.target = None;
                tracing::warn!(%error, "configuration watch not moved; polling covers it");
            }
        }
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

/// Where the watcher is between two looks.
struct State {
    /// The text last judged, loaded or refused.
    applied: Option<Snapshot>,
    /// A text read that differs from the applied one, and since when it has stayed the same
    /// with no event.
    pending: Option<(Snapshot, Instant)>,
    /// When to look again, if the settle timer runs.
    due: Option<Instant>,
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

    fn root(&self) -> &Path {
        self.watch_root.as_deref().unwrap_or(&self.path)
    }

    async fn run(
        self,
        config: Arc<RwLock<Arc<Config>>>,
        mut armed: Armed,
        // Held so that `woken` never closes while the watch is being moved.
        wake: mpsc::Sender<()>,
        mut woken: mpsc::Receiver<()>,
    ) {
        // Watching: both outcomes are on `/metrics` from now on, at zero until they happen.
        metrics::register_config_loads();
        let mut state = State {
            applied: self.loaded.clone().map(Snapshot::Files),
            pending: None,
            due: None,
        };
        // The first tick is now: a change made between the caller's read and the watch's start
        // produced no event this watch saw.
        let mut poll = tokio::time::interval(self.every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = state.due;
            tokio::select! {
                _ = poll.tick() => {}
                Some(()) = woken.recv() => {
                    let now = Instant::now();
                    let idle = state.due.is_none();
                    // Something changed: whatever was read before is not settled yet.
                    if let Some((_, since)) = &mut state.pending {
                        *since = now;
                    }
                    state.due = Some(now + self.settle);
                    if !idle {
                        continue;
                    }
                    // The first event of a burst: read now, to compare with what the end of the
                    // settle period reads.
                }
                () = sleep_until(due), if due.is_some() => state.due = None,
            }
            armed.follow(self.root(), &wake, self.ignore_dotfiles);
            self.look(&mut state, &config).await;
        }
    }

    /// Reads the configuration and loads or refuses it once it has settled.
    async fn look(&self, state: &mut State, config: &RwLock<Arc<Config>>) {
        let now = snapshot(&self.path, self.ignore_dotfiles).await;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        if state.applied.as_ref() == Some(&now) {
            state.pending = None;
            return;
        }
        let settled_at = match &state.pending {
            Some((seen, since)) if *seen == now => *since + self.settle,
            _ => {
                // New, or still changing: wait until it stays the same.
                let at = Instant::now() + self.settle;
                state.pending = Some((now, Instant::now()));
                state.due = Some(state.due.map_or(at, |due| due.max(at)));
                return;
            }
        };
        if Instant::now() < settled_at {
            state.due = Some(state.due.map_or(settled_at, |due| due.max(settled_at)));
            return;
        }
        state.pending = None;
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
        state.applied = Some(now);
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

/// Sleeps until `due`, or forever without one (the `select!` branch is disabled then anyway).
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
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

    /// Polls `condition` every 10 ms for up to 20 s.
    async fn eventually(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// A poll interval no test outlives: whatever these tests see loaded came from an event.
    const NO_POLL: Duration = Duration::from_secs(600);

    /// A new empty directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rl-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Rewrites `path` in place: same inode, truncated then written.
    fn rewrite(path: &Path, text: &str) {
        use std::io::Write;
        let mut file = std::fs::File::options()
            .write(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// Points the link `link` at `target` atomically, as Kubernetes and deploy scripts do: a new
    /// link renamed over the old one.
    fn swap(link: &Path, target: &str) {
        let tmp = link.with_file_name("..swap_tmp");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, link).unwrap();
    }

    /// Waits for the reloader's first read (at its start), so that what a test changes next can
    /// only be seen through an event.
    async fn started(stats: &ReloadStats) {
        assert!(eventually(|| stats.reads() >= 1).await, "never read");
    }

    fn running(path: &Path) -> Arc<RwLock<Arc<Config>>> {
        Arc::new(RwLock::new(Arc::new(Config::load(path).unwrap())))
    }

    fn reloader(path: &Path, every: Duration) -> Reloader {
        Reloader::new(path.to_owned(), every)
            .unwrap()
            .settle(Duration::from_millis(100))
            .loaded(Config::read(path).unwrap())
    }

    async fn broken_then_fixed(name: &str, every: Duration) {
        let dir = scratch(name);
        let path = dir.join("edge.yaml");
        std::fs::write(&path, file("10")).unwrap();
        let config = running(&path);
        let reloader = reloader(&path, every);
        let stats = reloader.stats();
        let task = reloader.spawn(config.clone()).unwrap();
        started(&stats).await;
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
        assert_eq!((stats.loaded(), stats.refused()), (1, 1));
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_broken_file_keeps_the_running_configuration() {
        broken_then_fixed("broken-poll", Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_broken_file_seen_by_events_keeps_the_running_configuration() {
        broken_then_fixed("broken-events", NO_POLL).await;
    }

    #[tokio::test]
    async fn a_file_rewritten_in_place_is_reloaded_by_events() {
        let dir = scratch("in-place");
        let path = dir.join("edge.yaml");
        std::fs::write(&path, file("10")).unwrap();
        let config = running(&path);
        let reloader = reloader(&path, NO_POLL);
        let stats = reloader.stats();
        let task = reloader.spawn(config.clone()).unwrap();
        started(&stats).await;
        rewrite(&path, &file("20"));
        assert!(
            eventually(|| limit(&config) == Some(20)).await,
            "an in-place rewrite was not loaded"
        );
        // And again: the watch outlives a load.
        rewrite(&path, &file("30"));
        assert!(
            eventually(|| limit(&config) == Some(30)).await,
            "a second rewrite was not loaded"
        );
        assert_eq!((stats.loaded(), stats.refused()), (2, 0));
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_configmap_data_swap_is_reloaded_by_events() {
        use std::os::unix::fs::symlink;
        let dir = scratch("configmap");
        std::fs::create_dir(dir.join("..2026_12_03_06_00_00.0001")).unwrap();
        std::fs::write(dir.join("..2026_12_03_06_00_00.0001/edge.yaml"), file("10")).unwrap();
        symlink("..2026_12_03_06_00_00.0001", dir.join("..data")).unwrap();
        symlink("..data/edge.yaml", dir.join("edge.yaml")).unwrap();
        // As a file (the link in the volume) and as the volume's directory.
        let (by_file, by_dir) = (running(&dir.join("edge.yaml")), running(&dir));
        let mut tasks = Vec::new();
        for (path, config) in [(dir.join("edge.yaml"), &by_file), (dir.clone(), &by_dir)] {
            let reloader = reloader(&path, NO_POLL);
            let stats = reloader.stats();
            tasks.push(reloader.spawn(config.clone()).unwrap());
            started(&stats).await;
        }

        std::fs::create_dir(dir.join("..2026_12_03_06_05_00.0002")).unwrap();
        std::fs::write(dir.join("..2026_12_03_06_05_00.0002/edge.yaml"), file("20")).unwrap();
        swap(&dir.join("..data"), "..2026_12_03_06_05_00.0002");
        std::fs::remove_dir_all(dir.join("..2026_12_03_06_00_00.0001")).unwrap();
        assert!(
            eventually(|| limit(&by_file) == Some(20)).await,
            "the swap was not seen through the file"
        );
        assert!(
            eventually(|| limit(&by_dir) == Some(20)).await,
            "the swap was not seen through the directory"
        );
        tasks.iter().for_each(|task| task.abort());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_runtime_root_current_link_swap_is_reloaded_by_events() {
        use std::os::unix::fs::symlink;
        let root = scratch("runtime-root");
        for version in ["v1", "v2"] {
            std::fs::create_dir_all(root.join(version).join("config")).unwrap();
        }
        std::fs::write(root.join("v1/config/edge.yaml"), file("10")).unwrap();
        symlink("v1", root.join("current")).unwrap();
        let path = root.join("current/config");
        // Watching the root directory (RUNTIME_WATCH_ROOT with a root above `current`), and
        // watching the `current` link itself (envoyproxy/ratelimit's default RUNTIME_ROOT).
        let (by_parent, by_link) = (running(&path), running(&path));
        let mut tasks = Vec::new();
        for (watch_root, config) in [(root.clone(), &by_parent), (root.join("current"), &by_link)] {
            let reloader = reloader(&path, NO_POLL).watch_root(watch_root);
            let stats = reloader.stats();
            tasks.push(reloader.spawn(config.clone()).unwrap());
            started(&stats).await;
        }

        std::fs::write(root.join("v2/config/edge.yaml"), file("20")).unwrap();
        swap(&root.join("current"), "v2");
        assert!(
            eventually(|| limit(&by_parent) == Some(20)).await,
            "the swap was not seen from the root"
        );
        assert!(
            eventually(|| limit(&by_link) == Some(20)).await,
            "the swap was not seen from the link"
        );
        // The watch followed the link to v2: a change made in place there is seen too.
        rewrite(&root.join("v2/config/edge.yaml"), &file("30"));
        assert!(
            eventually(|| limit(&by_parent) == Some(30)).await,
            "an edit in the new version was not seen from the root"
        );
        assert!(
            eventually(|| limit(&by_link) == Some(30)).await,
            "an edit in the new version was not seen from the link"
        );
        tasks.iter().for_each(|task| task.abort());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn dotfiles_are_ignored_when_asked() {
        let dir = scratch("dotfiles");
        std::fs::write(dir.join("edge.yaml"), file("10")).unwrap();
        let config = running(&dir);
        let reloader = reloader(&dir, NO_POLL).ignore_dotfiles(true);
        let stats = reloader.stats();
        let task = reloader.spawn(config.clone()).unwrap();
        started(&stats).await;
        // An editor's scratch copy that does not parse: read, it would refuse every change.
        std::fs::write(dir.join(".edge.yaml"), file("zero")).unwrap();
        rewrite(&dir.join("edge.yaml"), &file("20"));
        assert!(
            eventually(|| limit(&config) == Some(20)).await,
            "the change was not loaded past the dotfile"
        );
        assert_eq!((stats.loaded(), stats.refused()), (1, 0));
        task.abort();

        // Not asked, the same dotfile is read, and refused.
        let reloader = Reloader::new(dir.clone(), NO_POLL)
            .unwrap()
            .settle(Duration::from_millis(100));
        let stats = reloader.stats();
        let task = reloader.spawn(config.clone()).unwrap();
        assert!(eventually(|| stats.refused() == 1).await, "never judged");
        assert_eq!(limit(&config), Some(20));
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_watch_root_is_an_error() {
        let dir = scratch("missing");
        let path = dir.join("edge.yaml");
        std::fs::write(&path, file("10")).unwrap();
        let config = running(&path);
        let error = reloader(&path, NO_POLL)
            .watch_root(dir.join("nowhere"))
            .spawn(config)
            .unwrap_err();
        assert!(matches!(error, WatchError::Missing { .. }), "{error}");
        assert!(error.to_string().contains("nowhere"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn spawning_outside_a_runtime_is_an_error() {
        let dir = scratch("no-runtime");
        let path = dir.join("edge.yaml");
        std::fs::write(&path, file("10")).unwrap();
        let error = reloader(&path, NO_POLL).spawn(running(&path)).unwrap_err();
        assert!(matches!(error, WatchError::NoRuntime), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_directory_made_anew_is_watched_again() {
        let dir = scratch("anew");
        let conf = dir.join("conf");
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("edge.yaml"), file("10")).unwrap();
        let config = running(&conf);
        let reloader = reloader(&conf, NO_POLL);
        let stats = reloader.stats();
        let task = reloader.spawn(config.clone()).unwrap();
        started(&stats).await;
        // Deleted (an event the old watch reports), then made again with a new file.
        std::fs::remove_dir_all(&conf).unwrap();
        std::fs::create_dir(&conf).unwrap();
        std::fs::write(conf.join("edge.yaml"), file("20")).unwrap();
        assert!(
            eventually(|| limit(&config) == Some(20)).await,
            "the new directory was not loaded"
        );
        // Only a watch on the new directory sees this.
        rewrite(&conf.join("edge.yaml"), &file("30"));
        assert!(
            eventually(|| limit(&config) == Some(30)).await,
            "a change in the new directory was not seen"
        );
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_and_opens_do_not_wake_but_changes_do() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};
        let event = |kind, path: &str| Ok(Event::new(kind).add_path(PathBuf::from(path)));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let created = EventKind::Create(CreateKind::File);
        assert!(!wakes(&event(open, "/c/edge.yaml"), false));
        assert!(!wakes(&event(read, "/c/edge.yaml"), false));
        assert!(wakes(&event(written, "/c/edge.yaml"), false));
        assert!(wakes(&event(data, "/c/edge.yaml"), true));
        assert!(wakes(&event(created, "/c/.edge.yaml.swp"), false));
        assert!(!wakes(&event(created, "/c/.edge.yaml.swp"), true));
        // Kubernetes' links are dotted twice and always count.
        assert!(wakes(&event(renamed, "/c/..data"), true));
        assert!(wakes(&event(created, "/c/..2026_12_03_06_00_00.1"), true));
        assert!(wakes(&Err(notify::Error::generic("queue overflow")), true));
    }
}
