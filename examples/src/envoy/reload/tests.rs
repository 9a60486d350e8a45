//! The reloader's tests: broken files keep the running configuration, rewrites, ConfigMap and
//! runtime-root swaps are reloaded by events, dotfiles, missing roots, and which events wake it.
#![allow(clippy::unwrap_used)]

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind};
use tokio::time::Instant;

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
