//! The settings' unit tests: defaults, the environment, flags over it, Redis' forms, and errors
//! that name their variable.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

use super::*;
use std::collections::HashMap;

fn resolve(flags: Flags, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::resolve(flags, &move |name| vars.get(name).cloned())
}

#[test]
fn the_defaults_are_envoyproxy_ratelimits() {
    let s = resolve(Flags::default(), &[]).unwrap();
    assert_eq!(s.grpc, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(s.http, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(s.debug, "0.0.0.0:6070".parse().unwrap());
    assert_eq!(
        s.config.path,
        PathBuf::from("/srv/runtime_data/current/config")
    );
    assert_eq!(s.config.watch, PathBuf::from("/srv/runtime_data/current"));
    assert_eq!(s.backend, Backend::Memory);
    assert_eq!(s.near_limit_ratio, 0.8);
    assert_eq!(s.prometheus, None);
    assert_eq!(s.response_headers, None);
    assert!(!s.shadow_mode && !s.quota_mode && !s.healthy_needs_config && !s.log_json);
}

#[test]
fn the_environment_sets_what_a_deployment_sets() {
    let s = resolve(
        Flags::default(),
        &[
            ("RUNTIME_ROOT", "/data"),
            ("RUNTIME_SUBDIRECTORY", "ratelimit"),
            ("RUNTIME_WATCH_ROOT", "false"),
            ("RUNTIME_IGNOREDOTFILES", "true"),
            ("BACKEND_TYPE", "redis"),
            ("REDIS_SOCKET_TYPE", "tcp"),
            ("REDIS_URL", "redis:6379"),
            ("REDIS_AUTH", "user:p@ss/word"),
            ("PORT", "9080"),
            ("GRPC_PORT", "9081"),
            ("DEBUG_PORT", "9070"),
            ("HOST", "127.0.0.1"),
            ("USE_PROMETHEUS", "true"),
            ("PROMETHEUS_ADDR", ":9191"),
            ("LOCAL_CACHE_SIZE_IN_BYTES", "1048576"),
            ("NEAR_LIMIT_RATIO", "0.9"),
            ("SHADOW_MODE", "True"),
            ("LIMIT_RESPONSE_HEADERS_ENABLED", "1"),
            ("LIMIT_REMAINING_HEADER", "X-Left"),
            ("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", "t"),
            ("CACHE_KEY_PREFIX", "team-a:"),
            ("LOG_LEVEL", "WARN"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .unwrap();
    assert_eq!(s.config.path, PathBuf::from("/data/ratelimit/config"));
    assert_eq!(s.config.watch, s.config.path);
    assert!(s.config.ignore_dotfiles);
    assert_eq!(
        s.backend,
        Backend::Redis("redis://user:p%40ss%2Fword@redis:6379".into())
    );
    assert_eq!(s.http, "127.0.0.1:9080".parse().unwrap());
    assert_eq!(s.grpc, "0.0.0.0:9081".parse().unwrap());
    assert_eq!(s.debug, "0.0.0.0:9070".parse().unwrap());
    assert_eq!(
        s.prometheus,
        Some(("0.0.0.0:9191".parse().unwrap(), "/metrics".into()))
    );
    assert_eq!(
        s.over_limit_cache_keys,
        1_048_576 / OVER_LIMIT_CACHE_ENTRY_BYTES
    );
    assert_eq!(s.near_limit_ratio, 0.9);
    assert!(s.shadow_mode && s.healthy_needs_config && s.log_json);
    let headers = s.response_headers.unwrap();
    assert_eq!(
        (headers.limit.as_str(), headers.remaining.as_str()),
        ("RateLimit-Limit", "X-Left")
    );
    assert_eq!(s.key_prefix.as_deref(), Some("team-a:"));
    assert_eq!(s.log_filter, "warn");
}

#[test]
fn a_flag_beats_the_environment() {
    let flags = Flags {
        http: Some("127.0.0.1:1".parse().unwrap()),
        store: Some(StoreKind::Memory),
        config: Some("/etc/rl.yaml".into()),
        ..Flags::default()
    };
    let s = resolve(
        flags,
        &[
            ("PORT", "9080"),
            ("BACKEND_TYPE", "redis"),
            ("REDIS_URL", "x:1"),
            ("RUNTIME_ROOT", "/data"),
        ],
    )
    .unwrap();
    assert_eq!(s.http, "127.0.0.1:1".parse().unwrap());
    assert_eq!(s.backend, Backend::Memory);
    assert_eq!(s.config.path, PathBuf::from("/etc/rl.yaml"));
}

#[test]
fn cluster_sentinel_unix_and_a_second_redis_per_second() {
    let cluster = resolve(
        Flags::default(),
        &[
            ("REDIS_TYPE", "CLUSTER"),
            ("REDIS_URL", "a:7000, b:7001"),
            ("REDIS_TLS", "true"),
        ],
    )
    .unwrap();
    assert_eq!(
        cluster.backend,
        Backend::RedisCluster(vec!["rediss://a:7000".into(), "rediss://b:7001".into()])
    );
    let sentinel = resolve(
        Flags::default(),
        &[
            ("REDIS_TYPE", "sentinel"),
            ("REDIS_URL", "mymaster,s1:26379,s2:26379"),
            ("REDIS_AUTH", "secret"),
        ],
    )
    .unwrap();
    assert_eq!(
        sentinel.backend,
        Backend::RedisSentinel {
            master: "mymaster".into(),
            sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
            auth: Some("secret".into()),
            tls: false,
        }
    );
    let unix = resolve(
        Flags::default(),
        &[
            ("REDIS_SOCKET_TYPE", "unix"),
            ("REDIS_URL", "/var/run/redis.sock"),
            ("REDIS_PERSECOND", "true"),
            ("REDIS_PERSECOND_URL", "fast:6380"),
        ],
    )
    .unwrap();
    assert_eq!(
        unix.backend,
        Backend::Redis("redis+unix:///var/run/redis.sock".into())
    );
    assert_eq!(
        unix.per_second,
        Some(Backend::Redis("redis://fast:6380".into()))
    );
}

#[test]
fn a_bad_value_names_its_variable() {
    for (name, value) in [
        ("PORT", "http"),
        ("GRPC_HOST", "localhost:1"),
        ("SHADOW_MODE", "yes please"),
        ("NEAR_LIMIT_RATIO", "1.5"),
        ("NEAR_LIMIT_RATIO", "NaN"),
        ("LOCAL_CACHE_SIZE_IN_BYTES", "-1"),
        ("REDIS_TYPE", "ring"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("PROMETHEUS_ADDR", "nine"),
        ("BACKEND_TYPE", "memcache"),
        ("BACKEND_TYPE", "etcd"),
        ("TRACING_EXPORTER_PROTOCOL", "zipkin"),
        ("TRACING_SAMPLING_RATE", "2"),
    ] {
        let mut vars = vec![(name, value), ("REDIS_URL", "r:1")];
        if name == "PROMETHEUS_ADDR" {
            vars.push(("USE_PROMETHEUS", "true"));
        }
        if name.starts_with("TRACING_") {
            vars.push(("TRACING_ENABLED", "true"));
        }
        let error = resolve(Flags::default(), &vars).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!("{name}=")),
            "{name}={value}: {error}"
        );
    }
    let sentinel_without_sentinels = resolve(
        Flags::default(),
        &[("REDIS_TYPE", "sentinel"), ("REDIS_URL", "mymaster")],
    );
    assert!(sentinel_without_sentinels.is_err());
}
