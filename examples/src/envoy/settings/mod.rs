//! The service's settings: envoyproxy/ratelimit's environment variables, with the same names,
//! defaults and meanings where they apply, and flags for those who prefer them. A flag beats
//! the environment, setting by setting.
//!
//! Reading is a pure function of the flags and of a lookup for the environment
//! ([`Settings::resolve`]), so that every variable is tested without touching the process'
//! own environment. A value that does not parse is a [`SettingsError`] naming the variable:
//! a Deployment with a typo fails at start, loudly, rather than running on a default.
//!
//! Variables of envoyproxy/ratelimit that have nothing to do here are accepted and named in
//! the log ([`Settings::notes`]): `REDIS_POOL_SIZE` (one multiplexed connection per node does
//! what a pool does), `EXPIRATION_JITTER_MAX_SECONDS` (a GCRA key expires when its bucket is
//! full again, so expiries are spread by the traffic itself) and
//! `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT` (a denial never debits here, whatever it says).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use thiserror::Error;

/// The command line of `ratelimit-service`.
#[derive(Debug, Parser)]
#[command(
    name = "ratelimit-service",
    version,
    about = "Envoy's rate limit service, on ratelimit"
)]
pub struct Cli {
    /// What to do; serving when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings given as flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validates a configuration file or directory, prints the descriptor tree with the limit
    /// each path gets, and exits non-zero with file, line and field on the first error.
    Check {
        /// A YAML file, or a directory of them (one domain each).
        path: PathBuf,
    },
}

/// The settings given as flags; each one left out falls back to its environment variable, then
/// to its default.
#[derive(Debug, Default, Args)]
pub struct Flags {
    /// The descriptor configuration: a YAML file, or a directory of them [default:
    /// `$RUNTIME_ROOT/$RUNTIME_SUBDIRECTORY/$RUNTIME_APPDIRECTORY`].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to serve gRPC [default: `$GRPC_HOST:$GRPC_PORT`, 0.0.0.0:8081].
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// Where to serve HTTP: `/healthcheck`, `/json`, `/metrics`, `/status`, `/livez`,
    /// `/readyz` [default: `$HOST:$PORT`, 0.0.0.0:8080].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Where to serve the debug endpoints (`/rlconfig`) [default: `$DEBUG_HOST:$DEBUG_PORT`,
    /// 0.0.0.0:6070].
    #[arg(long)]
    pub debug: Option<SocketAddr>,
    /// Where the buckets live [default: from `$BACKEND_TYPE` and `$REDIS_TYPE`; memory when
    /// neither `$BACKEND_TYPE` nor `$REDIS_URL` is set].
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,
    /// Redis URL (`redis://host:port/db`, `rediss://`, `redis+unix:///path`) [default: from
    /// `$REDIS_URL`, `$REDIS_SOCKET_TYPE`, `$REDIS_AUTH`, `$REDIS_TLS`; redis://127.0.0.1:6379].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated URLs [default: from `$REDIS_URL` with
    /// `REDIS_TYPE=cluster`; redis://127.0.0.1:7000,7001,7002].
    #[arg(long)]
    pub redis_nodes: Option<String>,
    /// DynamoDB table, for `--store dynamodb` [default: `$DYNAMODB_TABLE`, ratelimit]. Region,
    /// credentials and endpoint come from the usual AWS places.
    #[arg(long)]
    pub dynamodb_table: Option<String>,
    /// What to answer while the store is unreachable [default: `$FAILURE_POLICY`, local].
    #[arg(long, value_enum)]
    pub failure_policy: Option<Failure>,
    /// How many replicas share the store; with `--failure-policy local` each enforces its share
    /// of every limit while the store is away [default: `$RATELIMIT_REPLICAS`, 1].
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Count the replicas in the store itself, each heartbeating every this many milliseconds
    /// (the count then follows replicas that come and go; `--replicas` stays a floor); 0 is off
    /// [default: `$RATELIMIT_MEMBERSHIP_PERIOD_MS`, 0].
    #[arg(long)]
    pub membership_period_ms: Option<u64>,
    /// How long a changed configuration must stay the same before it is loaded, in
    /// milliseconds (a file read while it is being written is never loaded) [default: 2000].
    #[arg(long)]
    pub reload_settle_ms: Option<u64>,
    /// How often to look for a changed configuration, in milliseconds, as well as on kernel
    /// events; 0 turns reloading off [default: 1000].
    #[arg(long)]
    pub reload_ms: Option<u64>,
    /// Anomaly detection: `shadow` reports what it would do on /status and in the log; `off`
    /// [default: shadow].
    #[arg(long, value_enum)]
    pub anomaly: Option<Anomaly>,
}

/// Where the buckets live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In this process (replicas do not share counts).
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
    /// A DynamoDB table.
    Dynamodb,
}

/// What to answer while the store is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Failure {
    /// Admit everything.
    Open,
    /// Refuse everything.
    Closed,
    /// Decide with buckets in this process.
    Local,
}

/// Whether anomaly detection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Anomaly {
    /// Detect and report, change nothing (the service's limits come from its configuration).
    Shadow,
    /// No detection.
    Off,
}

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

fn tracing_settings(env: &Env<'_>) -> Result<TracingSettings, SettingsError> {
    let protocol = match env
        .string("TRACING_EXPORTER_PROTOCOL", "http")
        .to_ascii_lowercase()
        .as_str()
    {
        "http" => TraceProtocol::Http,
        "grpc" => TraceProtocol::Grpc,
        other => {
            return Err(SettingsError::Invalid {
                name: "TRACING_EXPORTER_PROTOCOL",
                value: other.to_string(),
                expected: "http or grpc",
            });
        }
    };
    let sampling_rate: f64 = env.number("TRACING_SAMPLING_RATE", 1.0, "a rate from 0 to 1")?;
    if !(0.0..=1.0).contains(&sampling_rate) {
        return Err(SettingsError::Invalid {
            name: "TRACING_SAMPLING_RATE",
            value: sampling_rate.to_string(),
            expected: "a rate from 0 to 1",
        });
    }
    Ok(TracingSettings {
        protocol,
        service_name: env.string("TRACING_SERVICE_NAME", "RateLimit"),
        service_namespace: env.get("TRACING_SERVICE_NAMESPACE"),
        service_instance_id: env.get("TRACING_SERVICE_INSTANCE_ID"),
        sampling_rate,
    })
}

/// A setting that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    /// The variable's value is not one it takes.
    #[error("{name}={value:?}: expected {expected}")]
    Invalid {
        /// The environment variable.
        name: &'static str,
        /// What it was set to.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// The value names something this service does not do.
    #[error("{name}={value:?}: {why}")]
    Unsupported {
        /// The environment variable.
        name: &'static str,
        /// What it was set to.
        value: String,
        /// Why, and what to use instead.
        why: &'static str,
    },
}

/// Bytes one over-limit cache entry takes, to turn `LOCAL_CACHE_SIZE_IN_BYTES` into keys: the
/// key's hash, its deadline and the table's overhead, rounded up.
pub const OVER_LIMIT_CACHE_ENTRY_BYTES: usize = 64;

/// Reads variables from a lookup, naming the variable in every error.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The variable's value; unset and empty are the same, as for envconfig.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    /// A boolean as Go's `strconv.ParseBool` reads it.
    fn bool(&self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        match value.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(SettingsError::Invalid {
                name,
                value,
                expected: "true or false",
            }),
        }
    }

    fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &'static str,
    ) -> Result<T, SettingsError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|_| SettingsError::Invalid {
                name,
                value,
                expected,
            }),
        }
    }

    /// `HOST`-style and `PORT`-style variables as one address.
    fn address(
        &self,
        host: &'static str,
        port: &'static str,
        default_port: u16,
    ) -> Result<SocketAddr, SettingsError> {
        let ip = match self.get(host) {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(value) => value.parse().map_err(|_| SettingsError::Invalid {
                name: host,
                value,
                expected: "an IP address",
            })?,
        };
        let port = self.number(port, default_port, "a port number")?;
        Ok(SocketAddr::new(ip, port))
    }
}

impl Settings {
    /// Resolves the settings from `flags`, then the environment as `env` reads it, then the
    /// defaults.
    pub fn resolve(
        flags: Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let env = Env(env);
        let mut notes = Vec::new();
        let config = match flags.config.clone() {
            Some(path) => ConfigSource {
                watch: path.clone(),
                path,
                ignore_dotfiles: env.bool("RUNTIME_IGNOREDOTFILES", false)?,
            },
            None => {
                let root = PathBuf::from(env.string("RUNTIME_ROOT", "/srv/runtime_data/current"));
                let path = root
                    .join(env.string("RUNTIME_SUBDIRECTORY", ""))
                    .join(env.string("RUNTIME_APPDIRECTORY", "config"));
                ConfigSource {
                    watch: if env.bool("RUNTIME_WATCH_ROOT", true)? {
                        root
                    } else {
                        path.clone()
                    },
                    path,
                    ignore_dotfiles: env.bool("RUNTIME_IGNOREDOTFILES", false)?,
                }
            }
        };
        let grpc = match flags.grpc {
            Some(address) => address,
            None => env.address("GRPC_HOST", "GRPC_PORT", 8081)?,
        };
        let http = match flags.http {
            Some(address) => address,
            None => env.address("HOST", "PORT", 8080)?,
        };
        let debug = match flags.debug {
            Some(address) => address,
            None => env.address("DEBUG_HOST", "DEBUG_PORT", 6070)?,
        };
        let prometheus = if env.bool("USE_PROMETHEUS", false)? {
            let addr = env.string("PROMETHEUS_ADDR", ":9090");
            let path = env.string("PROMETHEUS_PATH", "/metrics");
            Some((listen_address("PROMETHEUS_ADDR", &addr)?, path))
        } else {
            None
        };

        let backend = backend(&flags, &env)?;
        let per_second = if env.bool("REDIS_PERSECOND", false)? {
            Some(redis_backend(&env, RedisVars::PER_SECOND)?)
        } else {
            None
        };
        if env.get("REDIS_POOL_SIZE").is_some() {
            env.number::<u32>("REDIS_POOL_SIZE", 10, "a number of connections")?;
            notes.push(
                "REDIS_POOL_SIZE: not needed; one multiplexed connection per Redis node \
                 carries every call"
                    .to_string(),
            );
        }
        if env.get("EXPIRATION_JITTER_MAX_SECONDS").is_some() {
            env.number::<u64>("EXPIRATION_JITTER_MAX_SECONDS", 300, "a number of seconds")?;
            notes.push(
                "EXPIRATION_JITTER_MAX_SECONDS: not needed; a GCRA key expires when its bucket \
                 is full again, not at a window's edge shared by every key"
                    .to_string(),
            );
        }
        if !env.bool("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", true)? {
            notes.push(
                "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT=false: a denial never debits here; \
                 every limit of a request is decided all-or-nothing"
                    .to_string(),
            );
        }
        let tracing = if env.bool("TRACING_ENABLED", false)? {
            Some(tracing_settings(&env)?)
        } else {
            None
        };

        let failure = match flags.failure_policy {
            Some(failure) => failure,
            None => match env.get("FAILURE_POLICY").as_deref() {
                None => Failure::Local,
                Some(value) => {
                    Failure::from_str(value, true).map_err(|_| SettingsError::Invalid {
                        name: "FAILURE_POLICY",
                        value: value.to_string(),
                        expected: "open, closed or local",
                    })?
                }
            },
        };
        let replicas = match flags.replicas {
            Some(replicas) => replicas,
            None => env.number("RATELIMIT_REPLICAS", 1, "a number of replicas")?,
        };
        if replicas == 0 {
            return Err(SettingsError::Invalid {
                name: "RATELIMIT_REPLICAS",
                value: "0".into(),
                expected: "at least one replica",
            });
        }
        let membership_ms = match flags.membership_period_ms {
            Some(ms) => ms,
            None => env.number("RATELIMIT_MEMBERSHIP_PERIOD_MS", 0, "milliseconds")?,
        };
        let cache_bytes: usize = env.number("LOCAL_CACHE_SIZE_IN_BYTES", 0, "a number of bytes")?;
        let near_limit_ratio: f64 = env.number("NEAR_LIMIT_RATIO", 0.8, "a ratio in (0, 1]")?;
        if !(near_limit_ratio > 0.0 && near_limit_ratio <= 1.0) {
            return Err(SettingsError::Invalid {
                name: "NEAR_LIMIT_RATIO",
                value: near_limit_ratio.to_string(),
                expected: "a ratio in (0, 1]",
            });
        }
        let response_headers =
            env.bool("LIMIT_RESPONSE_HEADERS_ENABLED", false)?
                .then(|| HeaderNames {
                    limit: env.string("LIMIT_LIMIT_HEADER", "RateLimit-Limit"),
                    remaining: env.string("LIMIT_REMAINING_HEADER", "RateLimit-Remaining"),
                    reset: env.string("LIMIT_RESET_HEADER", "RateLimit-Reset"),
                });
        let log_filter = match (env.get("RUST_LOG"), env.get("LOG_LEVEL")) {
            (Some(filter), _) => filter,
            (None, Some(level)) => log_level(&level)?.to_string(),
            (None, None) => "info".to_string(),
        };
        let log_json = match env.get("LOG_FORMAT").as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "LOG_FORMAT",
                    value: other.to_string(),
                    expected: "text or json",
                });
            }
        };
        Ok(Settings {
            config,
            grpc,
            http,
            debug,
            prometheus,
            backend,
            per_second,
            key_prefix: env.get("CACHE_KEY_PREFIX"),
            failure,
            replicas,
            membership: (membership_ms > 0)
                .then(|| std::time::Duration::from_millis(membership_ms)),
            reload_ms: flags.reload_ms.unwrap_or(1000),
            reload_settle_ms: flags.reload_settle_ms.unwrap_or(2000),
            anomaly: flags.anomaly.unwrap_or(Anomaly::Shadow),
            over_limit_cache_keys: cache_bytes / OVER_LIMIT_CACHE_ENTRY_BYTES,
            near_limit_ratio,
            shadow_mode: env.bool("SHADOW_MODE", false)?,
            quota_mode: env.bool("QUOTA_MODE", false)?,
            response_headers,
            healthy_needs_config: env.bool("HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", false)?,
            log_filter,
            log_json,
            tracing,
            notes,
        })
    }

    /// [`resolve`](Self::resolve) with the process' own environment.
    pub fn from_env(flags: Flags) -> Result<Settings, SettingsError> {
        Settings::resolve(flags, &|name| std::env::var(name).ok())
    }
}

/// Go's listen address form: `:9090` is every interface.
fn listen_address(name: &'static str, value: &str) -> Result<SocketAddr, SettingsError> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
    full.parse().map_err(|_| SettingsError::Invalid {
        name,
        value: value.to_string(),
        expected: "host:port or :port",
    })
}

/// logrus' levels as a tracing filter.
fn log_level(level: &str) -> Result<&'static str, SettingsError> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => {
            return Err(SettingsError::Invalid {
                name: "LOG_LEVEL",
                value: level.to_string(),
                expected: "trace, debug, info, warn, error, fatal or panic",
            });
        }
    })
}

/// The store, from the flags first and envoyproxy/ratelimit's variables second.
fn backend(flags: &Flags, env: &Env<'_>) -> Result<Backend, SettingsError> {
    let table = || {
        flags
            .dynamodb_table
            .clone()
            .unwrap_or_else(|| env.string("DYNAMODB_TABLE", "ratelimit"))
    };
    let kind = match flags.store {
        Some(kind) => kind,
        None => match env.get("BACKEND_TYPE").map(|v| v.to_ascii_lowercase()) {
            // envoyproxy/ratelimit's default backend is Redis; with no Redis named at all,
            // the embedded store.
            None if env.get("REDIS_URL").is_none() => StoreKind::Memory,
            None => return redis_backend(env, RedisVars::MAIN),
            Some(kind) if kind == "redis" => return redis_backend(env, RedisVars::MAIN),
            Some(kind) if kind == "memory" => StoreKind::Memory,
            Some(kind) if kind == "dynamodb" => StoreKind::Dynamodb,
            Some(kind) if kind == "memcache" => {
                return Err(SettingsError::Unsupported {
                    name: "BACKEND_TYPE",
                    value: kind,
                    why: "memcache cannot decide several limits atomically; use redis, \
                          dynamodb or memory",
                });
            }
            Some(value) => {
                return Err(SettingsError::Invalid {
                    name: "BACKEND_TYPE",
                    value,
                    expected: "redis, memory or dynamodb",
                });
            }
        },
    };
    Ok(match kind {
        StoreKind::Memory => Backend::Memory,
        StoreKind::Dynamodb => Backend::Dynamodb(table()),
        StoreKind::Redis => match &flags.redis_url {
            Some(url) => Backend::Redis(url.clone()),
            None if env.get("REDIS_URL").is_some() => match redis_backend(env, RedisVars::MAIN)? {
                Backend::RedisCluster(nodes) => Backend::Redis(nodes[0].clone()),
                other => other,
            },
            None => Backend::Redis("redis://127.0.0.1:6379".into()),
        },
        StoreKind::RedisCluster => match &flags.redis_nodes {
            Some(nodes) => Backend::RedisCluster(
                nodes
                    .split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
            ),
            None if env.get("REDIS_URL").is_some() => {
                let urls = redis_urls(env, RedisVars::MAIN)?;
                Backend::RedisCluster(urls)
            }
            None => Backend::RedisCluster(
                (7000..7003)
                    .map(|port| format!("redis://127.0.0.1:{port}"))
                    .collect(),
            ),
        },
    })
}

/// The names of one Redis' variables: the main one or the per-second one.
struct RedisVars {
    url: &'static str,
    kind: &'static str,
    socket: &'static str,
    auth: &'static str,
    tls: &'static str,
}

impl RedisVars {
    const MAIN: RedisVars = RedisVars {
        url: "REDIS_URL",
        kind: "REDIS_TYPE",
        socket: "REDIS_SOCKET_TYPE",
        auth: "REDIS_AUTH",
        tls: "REDIS_TLS",
    };
    const PER_SECOND: RedisVars = RedisVars {
        url: "REDIS_PERSECOND_URL",
        kind: "REDIS_PERSECOND_TYPE",
        socket: "REDIS_PERSECOND_SOCKET_TYPE",
        auth: "REDIS_PERSECOND_AUTH",
        tls: "REDIS_PERSECOND_TLS",
    };
}

/// A Redis as envoyproxy/ratelimit's variables describe it: `REDIS_TYPE` single, cluster or
/// sentinel; `REDIS_URL` as `host:port` (a comma-separated list for a cluster; the master's
/// name and then the Sentinels for sentinel), a socket path for `REDIS_SOCKET_TYPE=unix`, or a
/// full `redis://` URL.
fn redis_backend(env: &Env<'_>, vars: RedisVars) -> Result<Backend, SettingsError> {
    let kind = env.string(vars.kind, "single").to_ascii_lowercase();
    match kind.as_str() {
        "single" => Ok(Backend::Redis(
            redis_urls(env, vars)?
                .into_iter()
                .next()
                .unwrap_or_default(),
        )),
        "cluster" => Ok(Backend::RedisCluster(redis_urls(env, vars)?)),
        "sentinel" => {
            let value = env.get(vars.url).unwrap_or_default();
            let mut parts = value.split(',').map(str::trim).filter(|p| !p.is_empty());
            let (Some(master), sentinels) = (parts.next(), parts.collect::<Vec<_>>()) else {
                return Err(sentinel_error(vars.url, value));
            };
            if sentinels.is_empty() {
                return Err(sentinel_error(vars.url, value));
            }
            Ok(Backend::RedisSentinel {
                master: master.to_string(),
                // Sentinels speak plain TCP without the master's password.
                sentinels: sentinels.iter().map(|s| tcp_url(s, None, false)).collect(),
                auth: env.get(vars.auth),
                tls: env.bool(vars.tls, false)?,
            })
        }
        _ => Err(SettingsError::Invalid {
            name: vars.kind,
            value: kind,
            expected: "single, cluster or sentinel",
        }),
    }
}

fn sentinel_error(name: &'static str, value: String) -> SettingsError {
    SettingsError::Invalid {
        name,
        value,
        expected: "the master's name and then the Sentinels: mymaster,host:26379,...",
    }
}

/// `REDIS_URL`'s addresses as URLs, with `REDIS_AUTH` and `REDIS_TLS` applied.
fn redis_urls(env: &Env<'_>, vars: RedisVars) -> Result<Vec<String>, SettingsError> {
    let value = env.get(vars.url).ok_or(SettingsError::Invalid {
        name: vars.url,
        value: String::new(),
        expected: "host:port, a socket path or a redis:// URL",
    })?;
    let auth = env.get(vars.auth);
    let tls = env.bool(vars.tls, false)?;
    let socket = env.string(vars.socket, "tcp").to_ascii_lowercase();
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match socket.as_str() {
            _ if part.contains("://") => Ok(part.to_string()),
            "tcp" => Ok(tcp_url(part, auth.as_deref(), tls)),
            "unix" => Ok(unix_url(part, auth.as_deref())),
            _ => Err(SettingsError::Invalid {
                name: vars.socket,
                value: socket.clone(),
                expected: "tcp or unix",
            }),
        })
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err(SettingsError::Invalid {
            name: vars.url,
            value,
            expected: "host:port, a socket path or a redis:// URL",
        });
    }
    Ok(urls)
}

/// `host:port` as a URL; `auth` is `password` or `user:password`, as in `REDIS_AUTH`.
pub fn tcp_url(address: &str, auth: Option<&str>, tls: bool) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    match auth {
        None => format!("{scheme}://{address}"),
        Some(auth) => {
            let (user, password) = auth.split_once(':').unwrap_or(("", auth));
            format!(
                "{scheme}://{}:{}@{address}",
                percent_encode(user),
                percent_encode(password)
            )
        }
    }
}

fn unix_url(path: &str, auth: Option<&str>) -> String {
    match auth {
        None => format!("redis+unix://{path}"),
        Some(auth) => {
            let (user, password) = auth.split_once(':').unwrap_or(("", auth));
            let mut url = format!("redis+unix://{path}?pass={}", percent_encode(password));
            if !user.is_empty() {
                url.push_str(&format!("&user={}", percent_encode(user)));
            }
            url
        }
    }
}

/// Everything but RFC 3986's unreserved characters, percent-encoded: a password with `@` or
/// `/` stays a password.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
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
}
