//! What resolving yields: the settings a service starts with, every one decided.
//!
//! Apart from the flags because these are plain data with no parsing of their own: the rest of the
//! service reads them and never the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Anomaly, Failure};

/// Where the buckets live, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In this process.
    Memory,
    /// One Redis server at this URL.
    Redis(String),
    /// A Redis Cluster through these seed URLs.
    RedisCluster(Vec<String>),
    /// The master that these Sentinels name, found at start.
    RedisSentinel {
        /// The master's name, as the Sentinels know it.
        master: String,
        /// The Sentinels' URLs.
        sentinels: Vec<String>,
        /// `user:password` for the master, if any.
        auth: Option<String>,
        /// Whether the master is reached over TLS.
        tls: bool,
    },
    /// A DynamoDB table of this name.
    Dynamodb(String),
}

/// The names of the rate limit headers (`LIMIT_RESPONSE_HEADERS_ENABLED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderNames {
    /// The limit (`LIMIT_LIMIT_HEADER`, `RateLimit-Limit`).
    pub limit: String,
    /// What remains (`LIMIT_REMAINING_HEADER`, `RateLimit-Remaining`).
    pub remaining: String,
    /// Seconds until the bucket is full again (`LIMIT_RESET_HEADER`, `RateLimit-Reset`).
    pub reset: String,
}

/// Where and how configuration files are found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file or directory read.
    pub path: PathBuf,
    /// What to watch for changes: the runtime root itself where `RUNTIME_WATCH_ROOT` is true (a
    /// symbolic link swapped under it is then seen), else `path`.
    pub watch: PathBuf,
    /// Files whose names start with a dot are not read (`RUNTIME_IGNOREDOTFILES`).
    pub ignore_dotfiles: bool,
}

/// Everything the service needs to start, resolved from flags, environment and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The descriptor configuration.
    pub config: ConfigSource,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP address.
    pub http: SocketAddr,
    /// The debug address.
    pub debug: SocketAddr,
    /// Where to serve Prometheus' `/metrics` apart from the HTTP port, and on which path
    /// (`USE_PROMETHEUS`, `PROMETHEUS_ADDR`, `PROMETHEUS_PATH`); `/metrics` on the HTTP port
    /// is served either way.
    pub prometheus: Option<(SocketAddr, String)>,
    /// Where the buckets live.
    pub backend: Backend,
    /// A second Redis for the limits per second (`REDIS_PERSECOND*`).
    pub per_second: Option<Backend>,
    /// Prefix of every key in Redis (`CACHE_KEY_PREFIX`), or `None` for the store's own.
    pub key_prefix: Option<String>,
    /// What to answer while the store is unreachable.
    pub failure: Failure,
    /// How many replicas share the store.
    pub replicas: u32,
    /// The heartbeat period of the membership counted in the store, if on.
    pub membership: Option<std::time::Duration>,
    /// Reload polling interval in milliseconds; 0 is off.
    pub reload_ms: u64,
    /// Settle period of a changed configuration, in milliseconds.
    pub reload_settle_ms: u64,
    /// Anomaly detection.
    pub anomaly: Anomaly,
    /// How many keys the over-limit cache holds (`LOCAL_CACHE_SIZE_IN_BYTES` divided by an
    /// entry's size); 0 is off.
    pub over_limit_cache_keys: usize,
    /// The share of a limit used from which a hit is `near_limit` (`NEAR_LIMIT_RATIO`).
    pub near_limit_ratio: f64,
    /// Every limit in shadow mode (`SHADOW_MODE`): never `OVER_LIMIT` but for a request's own
    /// limit override.
    pub shadow_mode: bool,
    /// Every limit in quota mode (`QUOTA_MODE`).
    pub quota_mode: bool,
    /// The rate limit headers to add to every answer, if enabled.
    pub response_headers: Option<HeaderNames>,
    /// `/healthcheck` fails until a configuration with at least one domain is loaded
    /// (`HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED`).
    pub healthy_needs_config: bool,
    /// The log filter (`RUST_LOG`, else `LOG_LEVEL`).
    pub log_filter: String,
    /// Log lines as JSON (`LOG_FORMAT=json`).
    pub log_json: bool,
    /// OpenTelemetry traces (`TRACING_ENABLED`), if enabled.
    pub tracing: Option<TracingSettings>,
    /// Variables that were read and have no effect here, with the reason, for the log.
    pub notes: Vec<String>,
}

/// How traces are exported (envoyproxy/ratelimit's `TRACING_*` variables).
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    /// `TRACING_EXPORTER_PROTOCOL`.
    pub protocol: TraceProtocol,
    /// `TRACING_SERVICE_NAME` (`RateLimit`).
    pub service_name: String,
    /// `TRACING_SERVICE_NAMESPACE`.
    pub service_namespace: Option<String>,
    /// `TRACING_SERVICE_INSTANCE_ID`.
    pub service_instance_id: Option<String>,
    /// `TRACING_SAMPLING_RATE`, the share of traces kept, 0 to 1.
    pub sampling_rate: f64,
}

/// OTLP over HTTP or gRPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceProtocol {
    /// OTLP/HTTP with protobuf bodies.
    Http,
    /// OTLP/gRPC.
    Grpc,
}
