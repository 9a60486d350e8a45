//! Reading the environment: a lookup with the parsing rules of envoyproxy/ratelimit's Go
//! (`strconv.ParseBool`, listen addresses like `:9090`, logrus' level names).
//!
//! Apart so that every value parses one way, and every error names its variable, whichever
//! setting reads it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::SettingsError;

/// Reads variables from a lookup, naming the variable in every error.
pub(super) struct Env<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The variable's value; unset and empty are the same, as for envconfig.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }

    /// The variable's value, or `default`.
    pub(super) fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    /// A boolean as Go's `strconv.ParseBool` reads it.
    pub(super) fn bool(&self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
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

    /// The variable parsed as a `T`, or `default`; `expected` says what it takes.
    pub(super) fn number<T: std::str::FromStr>(
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
    pub(super) fn address(
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

/// Go's listen address form: `:9090` is every interface.
pub(super) fn listen_address(name: &'static str, value: &str) -> Result<SocketAddr, SettingsError> {
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
pub(super) fn log_level(level: &str) -> Result<&'static str, SettingsError> {
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
