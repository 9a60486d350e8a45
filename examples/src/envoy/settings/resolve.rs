//! Resolving the settings: each one from its flag, else its variable, else its default.
//!
//! Apart from the types it fills because it is the one long function that knows the precedence of
//! every setting; the pieces it calls parse single values.

use std::path::PathBuf;

use clap::ValueEnum as _;

use super::backend::{RedisVars, backend, redis_backend};
use super::env::{Env, listen_address, log_level};
use super::{
    Anomaly, ConfigSource, Failure, Flags, HeaderNames, OVER_LIMIT_CACHE_ENTRY_BYTES, Settings,
    SettingsError, TraceProtocol, TracingSettings,
};

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

/// The `TRACING_*` variables, read only when `TRACING_ENABLED` is set.
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
