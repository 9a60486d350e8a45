//! Reloading a configuration when its file changes, keeping the running one when the new one is
//! invalid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

use crate::descriptors::Config;

/// The newest modification time of `path` (a file, or the files of a directory).
fn modified(path: &Path) -> Option<SystemTime> {
    let own = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if !path.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .chain(own)
        .max()
}

/// Watches `path` every `every`; when it changes, loads it and, if it is valid, puts it in
/// `config`. An invalid file is logged with its file, line and field, and the running
/// configuration stays. Stops when the returned task is aborted or dropped with the runtime.
pub fn watch(
    path: PathBuf,
    config: Arc<RwLock<Arc<Config>>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = modified(&path);
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match Config::load(&path) {
                Ok(loaded) => {
                    *config.write() = Arc::new(loaded);
                    tracing::info!(path = %path.display(), "configuration reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "configuration refused; the running one stays");
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::descriptors::Entry;

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

    #[tokio::test]
    async fn a_broken_file_keeps_the_running_configuration() {
        let dir = std::env::temp_dir().join(format!("rl-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.yaml");
        std::fs::write(&path, file("10")).unwrap();
        let config = Arc::new(RwLock::new(Arc::new(Config::load(&path).unwrap())));
        let task = watch(path.clone(), config.clone(), Duration::from_millis(20));
        let wait_for = |expected: Option<u32>| {
            let config = config.clone();
            async move {
                for _ in 0..200 {
                    if limit(&config) == expected {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        // Modification times can be coarse: step them forward by hand.
        let touch = |text: String, seconds: u64| {
            std::fs::write(&path, text).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() + Duration::from_secs(seconds))
                .unwrap();
        };
        touch(file("zero"), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            limit(&config),
            Some(10),
            "a broken file replaced the configuration"
        );
        touch(file("20"), 2);
        assert!(wait_for(Some(20)).await, "a fixed file was not loaded");
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
