//! The kernel's side of reloading: which paths are watched, which events can mean a change, and
//! following a watch root that is replaced whole.
//!
//! Apart from the loop because it is about `notify` and the file system's events, where the loop
//! is about time and file contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::WatchError;

/// Whether `event` can mean the configuration changed.
///
/// Opening and reading files are events too, the reloader's own reads among them: they would
/// restart the settle timer forever. A write that completes (`Close(Write)`) is kept. With
/// `ignore_dotfiles`, changes to files whose names start with one dot (editors' swap files,
/// `.git`) are dropped, but not to names starting with two: Kubernetes' `..data` link and its
/// `..<timestamp>` directories are how a ConfigMap update arrives. An error (the kernel's queue
/// overflowed, say) may hide a change, so it wakes the reloader too.
pub(super) fn wakes(event: &notify::Result<Event>, ignore_dotfiles: bool) -> bool {
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
pub(super) struct Armed {
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
    pub(super) fn new(
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
    pub(super) fn follow(&mut self, root: &Path, wake: &mpsc::Sender<()>, ignore_dotfiles: bool) {
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
