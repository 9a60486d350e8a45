//! A running `ratelimit-service` whose configuration is rewritten: with an error, the old
//! configuration keeps serving; fixed, the new one applies; a file caught half-written is never
//! served; a Kubernetes ConfigMap's symlink swap is seen. Each is seen through file-system
//! events with a poll interval of a minute, and through the poll alone (an interval of 20 ms)
//! where events are not what is tested.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use support::{Service, ask, descriptor, temp_dir};
use tonic::transport::Channel;

fn config(per_hour: &str) -> String {
    format!(
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {{ unit: hour, requests_per_unit: {per_hour} }}\n"
    )
}

/// The limit of each descriptor of the answer (`None`: no limit applied).
fn limits(answer: &RateLimitResponse) -> Vec<Option<u32>> {
    answer
        .statuses
        .iter()
        .map(|s| s.current_limit.as_ref().map(|l| l.requests_per_unit))
        .collect()
}

/// Asks for `keys`, each with a value never used before (so no bucket ever runs out).
async fn limits_of(
    client: &mut RateLimitServiceClient<Channel>,
    keys: &[&str],
) -> Vec<Option<u32>> {
    static VALUES: AtomicU64 = AtomicU64::new(0);
    let value = format!("v{}", VALUES.fetch_add(1, Ordering::Relaxed));
    let descriptors = keys.iter().map(|k| descriptor(&[(k, &value)])).collect();
    limits(&ask(client, "edge", descriptors, 0).await.unwrap())
}

/// A poll interval that leaves only file-system events to see a change within [`soon`]'s 20 s.
const EVENTS_ONLY: &str = "60000";
/// A poll interval short enough that the poll sees every change.
const POLLED: &str = "20";

async fn start(path: &Path, reload_ms: &str, settle_ms: &str) -> Service {
    Service::start(&[
        "--config",
        path.to_str().unwrap(),
        "--reload-ms",
        reload_ms,
        "--reload-settle-ms",
        settle_ms,
    ])
    .await
    .unwrap()
}

/// Polls `condition` every 25 ms for up to 20 s: a generous deadline for a reload, and still
/// well before a poll every [`EVENTS_ONLY`] could make one.
async fn soon<F, Fut>(mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_is_reloaded_before_any_poll() {
    let dir = temp_dir("rl-reload-in-place");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, config("10")).unwrap();
    let service = start(&path, EVENTS_ONLY, "100").await;
    let mut client = service.client().await;
    assert_eq!(
        limits_of(&mut client, &["remote_address"]).await,
        [Some(10)]
    );
    for limit in [20, 30] {
        rewrite(&path, &config(&limit.to_string()));
        let reloaded = soon(|| {
            let mut client = client.clone();
            async move { limits_of(&mut client, &["remote_address"]).await == [Some(limit)] }
        })
        .await;
        assert!(
            reloaded,
            "the rewrite to {limit} was not loaded by an event"
        );
    }
    let loaded = "ratelimit_service_config_load_success";
    assert_eq!(service.metric(loaded).await, Some(2.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rewrite_keeps_the_running_configuration() {
    broken_rewrite(POLLED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rewrite_seen_by_events_keeps_the_running_configuration() {
    broken_rewrite(EVENTS_ONLY).await;
}

async fn broken_rewrite(reload_ms: &str) {
    let dir = temp_dir("rl-reload-e2e");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, config("10")).unwrap();
    let service = start(&path, reload_ms, "100").await;
    let mut client = service.client().await;
    assert_eq!(
        limits_of(&mut client, &["remote_address"]).await,
        [Some(10)]
    );

    std::fs::write(&path, config("-3")).unwrap();
    let refused = "ratelimit_service_config_load_error";
    assert!(
        soon(|| async { service.metric(refused).await == Some(1.0) }).await,
        "the broken file was never judged"
    );
    assert_eq!(
        limits_of(&mut client, &["remote_address"]).await,
        [Some(10)],
        "a broken file replaced the configuration"
    );

    std::fs::write(&path, config("20")).unwrap();
    let reloaded = soon(|| {
        let mut client = client.clone();
        async move { limits_of(&mut client, &["remote_address"]).await == [Some(20)] }
    })
    .await;
    assert!(reloaded, "the fixed file was not loaded");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A writer that pauses halfway through a file leaves a valid prefix on disk (here: the new
/// file's first descriptor, without its second). The service must never serve that prefix: at
/// every moment, both descriptors have a limit, the old ones or the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_is_never_served() {
    half_written(POLLED).await;
}

/// The same writer, seen through events: the settle timer restarts on each of its writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_seen_by_events_is_never_served() {
    half_written(EVENTS_ONLY).await;
}

async fn half_written(reload_ms: &str) {
    use std::io::Write;
    let dir = temp_dir("rl-reload-half");
    let path = dir.join("edge.yaml");
    let old = "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: hour, requests_per_unit: 10 }\n  - key: b\n    rate_limit: { unit: hour, requests_per_unit: 7 }\n";
    let first_half = "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: hour, requests_per_unit: 20 }\n";
    let second_half = "  - key: b\n    rate_limit: { unit: hour, requests_per_unit: 8 }\n";
    std::fs::write(&path, old).unwrap();
    // The settle period is far longer than the writer's pause, even on a busy machine.
    let service = start(&path, reload_ms, "3000").await;
    let mut client = service.client().await;
    assert_eq!(
        limits_of(&mut client, &["a", "b"]).await,
        [Some(10), Some(7)]
    );

    let watcher = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let now = limits_of(&mut client, &["a", "b"]).await;
                assert!(
                    now == [Some(10), Some(7)] || now == [Some(20), Some(8)],
                    "served {now:?}: a half-written file (after {seen:?})"
                );
                if now == [Some(20), Some(8)] {
                    return;
                }
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
        })
    };
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(first_half.as_bytes()).unwrap();
    file.sync_all().unwrap();
    // The writer's pause is the attack, not a wait for something.
    tokio::time::sleep(Duration::from_millis(200)).await;
    file.write_all(second_half.as_bytes()).unwrap();
    file.sync_all().unwrap();
    drop(file);
    tokio::time::timeout(support::PATIENCE, watcher)
        .await
        .expect("the complete file was never loaded")
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Kubernetes mounts a ConfigMap as links (`edge.yaml -> ..data/edge.yaml`,
/// `..data -> ..<timestamp>`) and updates it by replacing `..data` atomically. The new file can
/// carry the old one's modification time; the service must load it, as a file path and as a
/// directory, through the event the rename makes in the volume's directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_loaded() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("rl-reload-configmap");
    let first = dir.join("..2026_12_03_06_00_00.0001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("edge.yaml"), config("10")).unwrap();
    symlink("..2026_12_03_06_00_00.0001", dir.join("..data")).unwrap();
    symlink("..data/edge.yaml", dir.join("edge.yaml")).unwrap();
    let by_file = start(&dir.join("edge.yaml"), EVENTS_ONLY, "100").await;
    let by_dir = start(&dir, EVENTS_ONLY, "100").await;
    for service in [&by_file, &by_dir] {
        let mut client = service.client().await;
        assert_eq!(
            limits_of(&mut client, &["remote_address"]).await,
            [Some(10)]
        );
    }

    let second = dir.join("..2026_12_03_06_05_00.0002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("edge.yaml"), config("20")).unwrap();
    let old_mtime = std::fs::metadata(first.join("edge.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(second.join("edge.yaml"))
        .unwrap()
        .set_modified(old_mtime)
        .unwrap();
    symlink("..2026_12_03_06_05_00.0002", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();

    for service in [&by_file, &by_dir] {
        let client = service.client().await;
        let reloaded = soon(|| {
            let mut client = client.clone();
            async move { limits_of(&mut client, &["remote_address"]).await == [Some(20)] }
        })
        .await;
        assert!(reloaded, "the swapped ConfigMap was not loaded");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--reload-ms 0` turns reloading off: the service starts, serves, and watches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_zero_turns_reloading_off() {
    let dir = temp_dir("rl-reload-zero");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, config("10")).unwrap();
    let service = Service::start(&["--config", path.to_str().unwrap(), "--reload-ms", "0"])
        .await
        .unwrap();
    let mut client = service.client().await;
    assert_eq!(
        limits_of(&mut client, &["remote_address"]).await,
        [Some(10)]
    );
    let (_, metrics) = service.get("/metrics").await.unwrap();
    assert!(
        !metrics.contains("ratelimit_service_config_load"),
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
