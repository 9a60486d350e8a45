//! The service as an envoyproxy/ratelimit Deployment runs it: started from its environment
//! variables and a `RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config/` directory alone, probed on
//! `/healthcheck`, asked over gRPC and over `/json`, inspected on the debug port's `/rlconfig`;
//! and `ratelimit-service check` as a config repository's CI runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use support::{PATIENCE, Service, ask, connect, descriptor, get, redis_keys, temp_dir, unique};

use crate::common::{Process, free_port};

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

const CONFIG: &str = r#"
domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: minute, requests_per_unit: 3 }
  - key: path
    value: /blocked
    rate_limit: { unit: second, requests_per_unit: 0 }
"#;

/// `POST path` with `body` on loopback `port`: the status code and the body.
async fn post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    let code = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_string()))
}

/// Writes the configuration where a Deployment mounts it: `root/ratelimit/config/edge.yaml`.
fn runtime_root(config: &str) -> std::path::PathBuf {
    let root = temp_dir("runtime");
    let dir = root.join("ratelimit").join("config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("edge.yaml"), config).unwrap();
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_envoyproxy_ratelimit_environment_variables_alone() {
    let root = runtime_root(CONFIG);
    let (grpc, http, debug, prometheus) = (free_port(), free_port(), free_port(), free_port());
    let prefix = format!("{}:", unique("deploy"));
    // No flag at all: what envoyproxy/ratelimit's Deployment sets, and nothing else.
    let _service = Process(
        Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
            .env("RUNTIME_ROOT", &root)
            .env("RUNTIME_SUBDIRECTORY", "ratelimit")
            .env("RUNTIME_WATCH_ROOT", "false")
            .env("RUNTIME_IGNOREDOTFILES", "true")
            .env("BACKEND_TYPE", "redis")
            .env("REDIS_SOCKET_TYPE", "tcp")
            .env("REDIS_URL", "127.0.0.1:6379")
            .env("REDIS_POOL_SIZE", "10")
            .env("CACHE_KEY_PREFIX", &prefix)
            .env("LIMIT_RESPONSE_HEADERS_ENABLED", "true")
            .env("LIMIT_REMAINING_HEADER", "X-RateLimit-Left")
            .env("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", "true")
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "json")
            .env("HOST", "127.0.0.1")
            .env("GRPC_HOST", "127.0.0.1")
            .env("DEBUG_HOST", "127.0.0.1")
            .env("PORT", http.to_string())
            .env("GRPC_PORT", grpc.to_string())
            .env("DEBUG_PORT", debug.to_string())
            .env("USE_PROMETHEUS", "true")
            .env("PROMETHEUS_ADDR", format!(":{prometheus}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((200, body)) = get(http, "/healthcheck").await {
            assert_eq!(body, "OK");
            break;
        }
        assert!(Instant::now() < deadline, "/healthcheck never became 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut client = connect(&format!("http://127.0.0.1:{grpc}")).await;
    let address = descriptor(&[("remote_address", "10.0.0.1")]);
    for left in [2, 1, 0] {
        let answer = ask(&mut client, "edge", vec![address.clone()], 0)
            .await
            .unwrap();
        assert_eq!(answer.overall_code, OK);
        assert_eq!(answer.statuses[0].limit_remaining, left);
        let headers: Vec<(&str, &str)> = answer
            .response_headers_to_add
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(headers[0], ("RateLimit-Limit", "3"));
        assert_eq!(headers[1], ("X-RateLimit-Left", left.to_string().as_str()));
        assert_eq!(headers[2].0, "RateLimit-Reset");
    }
    let answer = ask(&mut client, "edge", vec![address], 0).await.unwrap();
    assert_eq!(answer.overall_code, OVER);
    // The buckets are in the Redis that REDIS_URL names, under CACHE_KEY_PREFIX.
    assert!(
        !redis_keys(6379, &prefix).is_empty(),
        "no key under {prefix}"
    );

    // The same decisions over /json, in protobuf's JSON mapping.
    let over = post(
        http,
        "/json",
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.1"}]}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(over.0, 429, "{}", over.1);
    assert!(
        over.1.contains(r#""overallCode":"OVER_LIMIT""#),
        "{}",
        over.1
    );
    let fresh = post(
        http,
        "/json",
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.2"}]}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(fresh.0, 200, "{}", fresh.1);
    assert!(fresh.1.contains(r#""limitRemaining":2"#), "{}", fresh.1);
    let bad = post(http, "/json", r#"{"domian":"edge"}"#).await.unwrap();
    assert_eq!(bad.0, 400);
    assert!(bad.1.contains("domian"), "{}", bad.1);
    let empty = post(http, "/json", r#"{"domain":"edge"}"#).await.unwrap();
    assert_eq!(empty.0, 400, "a request without descriptors is an error");

    // The status page (the gateway's too): one static page, and the JSON it draws, with the
    // answers so far, the descriptor just denied, the store's kind and health, the domains.
    let (code, page) = get(http, "/status").await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("status.json"), "{page}");
    let (code, json) = get(http, "/status.json").await.unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["title"], "ratelimit-service", "{json}");
    assert_eq!(status["totals"]["denials"], 2, "{json}");
    assert_eq!(status["store"]["kind"], "Redis", "{json}");
    assert_eq!(status["store"]["healthy"], true, "{json}");
    assert_eq!(status["limited_keys"][0]["rule"], "edge", "{json}");
    assert_eq!(
        status["limited_keys"][0]["key"], "remote_address=10.0.0.1",
        "{json}"
    );
    assert!(json.contains(r#""value":"edge""#), "the domains: {json}");
    assert!(
        status["anomaly"]["state"].is_string(),
        "shadow by default: {json}"
    );

    // The debug port's /rlconfig: every limit, in envoyproxy/ratelimit's form.
    let (code, dump) = get(debug, "/rlconfig").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        dump.contains("edge.remote_address: unit=MINUTE requests_per_unit=3, shadow_mode: false"),
        "{dump}"
    );
    assert!(
        dump.contains("edge.path_/blocked: unit=SECOND requests_per_unit=0"),
        "{dump}"
    );

    // USE_PROMETHEUS: envoyproxy/ratelimit's metric names on PROMETHEUS_ADDR (Go's `:port`).
    let (code, text) = get(prometheus, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let hits = r#"ratelimit_service_rate_limit_total_hits{domain="edge",key1="remote_address"}"#;
    assert!(text.contains(hits), "{text}");
    let over = r#"ratelimit_service_rate_limit_over_limit{domain="edge",key1="remote_address"}"#;
    assert!(text.contains(over), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_shadow_mode_answers_ok_and_still_says_which_limit_is_over() {
    let dir = temp_dir("shadow");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let service = Service::start_with_env(
        &["--config", path.to_str().unwrap()],
        &[("SHADOW_MODE", "true")],
    )
    .await
    .unwrap();
    let mut client = service.client().await;
    let blocked = descriptor(&[("path", "/blocked")]);
    let answer = ask(&mut client, "edge", vec![blocked], 0).await.unwrap();
    assert_eq!(answer.overall_code, OK, "SHADOW_MODE never denies");
    assert_eq!(answer.statuses[0].code, OVER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_environment_variable_stops_the_start_and_is_named() {
    let dir = temp_dir("badenv");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    for (name, value) in [
        ("NEAR_LIMIT_RATIO", "2"),
        ("BACKEND_TYPE", "memcache"),
        ("REDIS_TYPE", "ring"),
    ] {
        let refused = Service::start_with_env(
            &["--config", path.to_str().unwrap()],
            &[(name, value), ("REDIS_URL", "127.0.0.1:6379")],
        )
        .await;
        let error = refused.err().expect("started with a bad variable");
        assert!(error.contains(&format!("{name}=")), "{name}: {error}");
    }
}

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
        .args(["check", path.to_str().unwrap()])
        .env_remove("MERGE_DOMAIN_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_every_limit_or_the_first_error_with_file_line_and_field() {
    let dir = temp_dir("check");
    std::fs::write(dir.join("edge.yaml"), CONFIG).unwrap();
    std::fs::write(
        dir.join("api.yml"),
        "domain: api\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: plan\n        value: free\n        rate_limit: { unit: hour, requests_per_unit: 1000, name: free }\n",
    )
    .unwrap();
    let (ok, out, err) = check(&dir);
    assert!(ok, "{err}");
    assert!(out.contains("domain(s) api, edge: valid"), "{out}");
    assert!(
        out.contains(
            "api.tenant.plan_free: unit=HOUR requests_per_unit=1000, shadow_mode: false, name: free"
        ),
        "{out}"
    );
    assert!(out.contains("edge.remote_address: unit=MINUTE"), "{out}");

    let broken = temp_dir("check-broken");
    std::fs::write(
        broken.join("edge.yaml"),
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: fortnight, requests_per_unit: 3 }\n",
    )
    .unwrap();
    let (ok, out, err) = check(&broken);
    assert!(!ok, "a broken configuration passed: {out}");
    assert!(err.contains("edge.yaml"), "{err}");
    assert!(err.contains("edge.yaml:4:"), "line 4: {err}");
    assert!(err.contains("descriptors[0].rate_limit.unit"), "{err}");
}

/// The documents of a multi-document YAML file.
fn documents(text: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|document| serde_norway::Value::deserialize(document).unwrap())
        .collect()
}

/// Mounts a ConfigMap's `data` under `dir` as the kubelet does: every file a symbolic link
/// into `..data`, itself a link to a timestamped directory.
fn mount_configmap(dir: &Path, data: &serde_norway::Mapping) {
    std::fs::create_dir_all(dir).unwrap();
    let stamped = dir.join("..2026_12_03_06_00_00.1");
    std::fs::create_dir_all(&stamped).unwrap();
    for (name, text) in data {
        let name = name.as_str().unwrap();
        std::fs::write(stamped.join(name), text.as_str().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("..2026_12_03_06_00_00.1", dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envoyproxy_ratelimit_deployment_runs_with_only_the_image_changed() {
    let manifest = include_str!("../../deploy/k8s/envoy-ratelimit.yaml");
    let docs = documents(manifest);
    let kind = |d: &serde_norway::Value, kind: &str, name: &str| {
        d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
    };
    let deployment = docs
        .iter()
        .find(|d| kind(d, "Deployment", "ratelimit"))
        .expect("the ratelimit Deployment");
    let configmap = docs
        .iter()
        .find(|d| kind(d, "ConfigMap", "ratelimit-config"))
        .expect("its ConfigMap");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some("ratelimit:latest"));
    // envoyproxy/ratelimit's image has its binary at /bin/ratelimit, and so has ours.
    assert_eq!(container["command"][0].as_str(), Some("/bin/ratelimit"));
    assert!(include_str!("../../deploy/Dockerfile").contains("/bin/ratelimit"));
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();

    // The container's environment as written, but for where "redis" and "/data" are here.
    let data_root = temp_dir("k8s");
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_sequence().unwrap() {
        let (name, value) = (
            var["name"].as_str().unwrap(),
            var["value"].as_str().unwrap(),
        );
        let value = match name {
            "REDIS_URL" => value.replace("redis:", "127.0.0.1:"),
            "RUNTIME_ROOT" => data_root.to_str().unwrap().to_string(),
            _ => value.to_string(),
        };
        env.push((name.to_string(), value));
    }
    let root = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("RUNTIME_ROOT"))
        .and_then(|v| v["value"].as_str())
        .unwrap();
    let config_dir = data_root.join(mount.strip_prefix(root).unwrap().trim_start_matches('/'));
    mount_configmap(&config_dir, configmap["data"].as_mapping().unwrap());

    // Added for the test alone: ports of its own (tests run side by side) and a key prefix
    // of its own (Redis keeps buckets between runs).
    let (grpc, http, debug) = (free_port(), free_port(), free_port());
    let prefix = format!("{}:", unique("k8s"));
    let _service = Process(
        Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
            .env_clear()
            .envs(env)
            .env("PORT", http.to_string())
            .env("GRPC_PORT", grpc.to_string())
            .env("DEBUG_PORT", debug.to_string())
            .env("CACHE_KEY_PREFIX", &prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + PATIENCE;
    while get(http, "/healthcheck").await.map(|(code, _)| code) != Some(200) {
        assert!(Instant::now() < deadline, "/healthcheck never became 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = connect(&format!("http://127.0.0.1:{grpc}")).await;
    let root_path = descriptor(&[("PATH", "/")]);
    let first = ask(&mut client, "echo-ratelimit", vec![root_path.clone()], 0)
        .await
        .unwrap();
    assert_eq!(first.overall_code, OK);
    let second = ask(&mut client, "echo-ratelimit", vec![root_path], 0)
        .await
        .unwrap();
    assert_eq!(second.overall_code, OVER, "PATH / has 1 per minute");
    let other = ask(
        &mut client,
        "echo-ratelimit",
        vec![descriptor(&[("PATH", "/x")])],
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        (other.overall_code, other.statuses[0].limit_remaining),
        (OK, 99)
    );
    assert!(
        !redis_keys(6379, &prefix).is_empty(),
        "the buckets are not in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_quota_mode_reports_violations_and_never_denies() {
    let dir = temp_dir("quota");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let service = Service::start_with_env(
        &["--config", path.to_str().unwrap()],
        &[("QUOTA_MODE", "true")],
    )
    .await
    .unwrap();
    let mut client = service.client().await;
    let answer = ask(
        &mut client,
        "edge",
        vec![descriptor(&[("path", "/blocked")])],
        0,
    )
    .await
    .unwrap();
    assert_eq!(answer.overall_code, OK, "QUOTA_MODE never denies");
    assert_eq!(answer.statuses[0].code, OK);
    let metadata = answer.dynamic_metadata.expect("quota-mode metadata");
    let violations = format!("{:?}", metadata.fields["quotaModeViolations"]);
    assert!(violations.contains("NumberValue(0.0)"), "{violations}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_cleanly() {
    let dir = temp_dir("sigterm");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut service = Service::start(&["--config", path.to_str().unwrap()])
        .await
        .unwrap();
    let pid = service.process.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = service.process.0.try_wait().unwrap() {
            assert!(status.success(), "exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_count_each_other_in_the_store_and_notice_one_leaving() {
    let dir = temp_dir("members");
    let path = dir.join("edge.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let prefix = format!("{}:", unique("members"));
    let env = [
        ("BACKEND_TYPE", "redis"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("CACHE_KEY_PREFIX", prefix.as_str()),
        ("RATELIMIT_MEMBERSHIP_PERIOD_MS", "300"),
    ];
    let args = ["--config", path.to_str().unwrap()];
    let first = Service::start_with_env(&args, &env).await.unwrap();
    let second = Service::start_with_env(&args, &env).await.unwrap();
    let replicas = "ratelimit_service_replicas";
    let counted = |service: &Service, want: f64| {
        let http = service.http;
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let (_, text) = get(http, "/metrics").await.unwrap();
                let now = text
                    .lines()
                    .find_map(|l| l.strip_prefix(replicas)?.trim().parse::<f64>().ok());
                if now == Some(want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{replicas} is {now:?}, not {want}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    counted(&first, 2.0).await;
    counted(&second, 2.0).await;
    drop(second);
    counted(&first, 1.0).await;
}
