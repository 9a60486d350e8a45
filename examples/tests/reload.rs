//! A running `ratelimit-service` whose configuration file is rewritten: with an error, the old
//! configuration keeps serving; fixed, the new one applies.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::{Process, free_port};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

fn config(per_second: &str) -> String {
    format!(
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {{ unit: second, requests_per_unit: {per_second} }}\n"
    )
}

/// The limit the service reports for a fresh address.
async fn limit(client: &mut RateLimitServiceClient<Channel>, n: u32) -> u32 {
    let answer = client
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "remote_address".into(),
                    value: format!("10.5.0.{n}"),
                }],
                ..RateLimitDescriptor::default()
            }],
            hits_addend: 0,
        })
        .await
        .unwrap()
        .into_inner();
    answer.statuses[0]
        .current_limit
        .as_ref()
        .unwrap()
        .requests_per_unit
}

fn rewrite(path: &std::path::Path, text: String, seconds: u64) {
    std::fs::write(path, text).unwrap();
    // Modification times can be coarse: step them forward by hand.
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(seconds))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rewrite_keeps_the_running_configuration() {
    let dir = std::env::temp_dir().join(format!("rl-reload-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edge.yaml");
    std::fs::write(&path, config("10")).unwrap();
    let (grpc, http) = (free_port(), free_port());
    let _service = Process(
        Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
            .args(["--config", path.to_str().unwrap(), "--reload-ms", "50"])
            .args([
                "--grpc",
                &format!("127.0.0.1:{grpc}"),
                "--http",
                &format!("127.0.0.1:{http}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut client = None;
    for _ in 0..200 {
        if let Ok(c) = RateLimitServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut client = client.unwrap_or_else(|| panic!("ratelimit-service did not start"));
    assert_eq!(limit(&mut client, 1).await, 10);

    rewrite(&path, config("-3"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        limit(&mut client, 2).await,
        10,
        "a broken file replaced the configuration"
    );

    rewrite(&path, config("20"), 2);
    let mut reloaded = false;
    for n in 3..100 {
        if limit(&mut client, n).await == 20 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reloaded, "the fixed file was not loaded");
    std::fs::remove_dir_all(&dir).unwrap();
}
