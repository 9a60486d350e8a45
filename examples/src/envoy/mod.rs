//! `ratelimit-service`, the drop-in replacement for envoyproxy/ratelimit: Envoy's rate limit
//! service on ratelimit's [`Limiter`](ratelimit_core::Limiter), one concept a module.
//!
//! - [`config`]: the descriptor YAML of envoyproxy/ratelimit, parsed and validated;
//! - [`matcher`]: wildcard values (`*` anywhere, any number of times);
//! - [`service`]: `ShouldRateLimit`, every descriptor of a request decided all-or-nothing;
//! - [`metrics`]: what the service answered;
//! - [`reload`]: a changed configuration loaded while serving, a broken one refused;
//! - [`settings`]: envoyproxy/ratelimit's environment variables, and flags.

pub mod config;
pub mod matcher;
pub mod metrics;
pub mod reload;
pub mod service;
pub mod settings;
