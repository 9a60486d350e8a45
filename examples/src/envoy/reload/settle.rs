//! The reloader's loop: a look at the files on every event and poll, the settle period, and the
//! load or refusal of a settled text.
//!
//! Apart from the watches because this part decides what is loaded: only a text read twice the
//! same across a quiet settle period, and only a valid one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::envoy::config::{Config, ConfigError};
use crate::envoy::metrics;

use super::{Reloader, events::Armed};

/// What the watcher read at one look: every file's name and text, or why it could not.
#[derive(Debug, PartialEq, Eq)]
enum Snapshot {
    Files(Vec<(PathBuf, String)>),
    Unreadable(String),
}

/// Reads the configuration as it is now, off the runtime's workers.
async fn snapshot(path: &Path, ignore_dotfiles: bool) -> Snapshot {
    let path = path.to_owned();
    // Reading files blocks: off the runtime's workers.
    match tokio::task::spawn_blocking(move || Config::read_with(&path, ignore_dotfiles)).await {
        Ok(Ok(files)) => Snapshot::Files(files),
        Ok(Err(error)) => Snapshot::Unreadable(error.to_string()),
        Err(error) => Snapshot::Unreadable(error.to_string()),
    }
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
    pub(super) async fn run(
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
