//! The store from the flags and envoyproxy/ratelimit's variables: `BACKEND_TYPE`, and Redis'
//! `REDIS_*` (single, cluster, Sentinel; TCP or a socket; auth and TLS) as URLs.
//!
//! Apart because Redis alone has more variables than the rest of the settings together, read
//! twice over (the main Redis and the per-second one).

use super::env::Env;
use super::{Backend, Flags, SettingsError, StoreKind};

/// The store, from the flags first and envoyproxy/ratelimit's variables second.
pub(super) fn backend(flags: &Flags, env: &Env<'_>) -> Result<Backend, SettingsError> {
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
pub(super) struct RedisVars {
    url: &'static str,
    kind: &'static str,
    socket: &'static str,
    auth: &'static str,
    tls: &'static str,
}

impl RedisVars {
    /// `REDIS_URL` and the rest.
    pub(super) const MAIN: RedisVars = RedisVars {
        url: "REDIS_URL",
        kind: "REDIS_TYPE",
        socket: "REDIS_SOCKET_TYPE",
        auth: "REDIS_AUTH",
        tls: "REDIS_TLS",
    };
    /// `REDIS_PERSECOND_URL` and the rest.
    pub(super) const PER_SECOND: RedisVars = RedisVars {
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
pub(super) fn redis_backend(env: &Env<'_>, vars: RedisVars) -> Result<Backend, SettingsError> {
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

/// A Sentinel setting without a master's name and at least one Sentinel.
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

/// A socket path as a URL, with `auth` in the query the redis crate reads (`pass`, `user`).
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
