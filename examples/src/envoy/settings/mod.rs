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
//!
//! One part a file: the command line (`flags.rs`), what resolving yields (`resolved.rs`), reading
//! the environment (`env.rs`), resolving it all (`resolve.rs`) and the store's variables, Redis'
//! in particular (`backend.rs`).

use thiserror::Error;

mod backend;
mod env;
mod flags;
mod resolve;
mod resolved;

pub use backend::tcp_url;
pub use flags::{Anomaly, Cli, Command, Failure, Flags, StoreKind};
pub use resolved::{Backend, ConfigSource, HeaderNames, Settings, TraceProtocol, TracingSettings};

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

#[cfg(test)]
mod tests;
