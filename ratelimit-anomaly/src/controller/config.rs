//! What the controller watches for and how hard it acts, with the defaults.

use std::time::Duration;

use crate::detector::DetectorConfig;
use crate::monitor::Dimension;

/// What the controller watches for and how hard it acts.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// The length of a tick (turns times to live into ticks).
    pub tick: Duration,
    /// The global-rate detector's settings.
    pub detector: DetectorConfig,
    /// A detector score at or above this makes the tick suspicious.
    pub suspect_score: f64,
    /// Traffic above this multiple of its normal level (and four spreads above it) stays suspicious.
    pub elevated_factor: f64,
    /// Distinct sources above this multiple of their normal number (and four spreads above it)
    /// make the tick suspicious.
    pub sources_factor: f64,
    /// The CUSUM's threshold, in spreads accumulated beyond one spread a tick: a sustained rise of
    /// two spreads is caught in about `cusum_threshold` ticks.
    pub cusum_threshold: f64,
    /// Suspicious ticks in a row before acting.
    pub confirm_ticks: u32,
    /// Calm ticks in a row before relaxing.
    pub quiet_ticks: u32,
    /// What a tightening multiplies the global limit by.
    pub tighten_factor: f64,
    /// The lowest multiple of the configured global limit the controller sets.
    pub floor: f64,
    /// What each relaxing tick adds back, as a multiple of the configured limit.
    pub relax_step: f64,
    /// Unhealthy: p99 latency above this multiple of its normal level.
    pub latency_factor: f64,
    /// Unhealthy: server-error ratio above its normal level plus this.
    pub error_margin: f64,
    /// The dimensions whose keys may be penalised.
    pub key_dimensions: Vec<Dimension>,
    /// A key must send at least this many requests in a tick to be penalised.
    pub key_min_requests: u32,
    /// ... and this multiple of what the median heavy key sends.
    pub key_peer_factor: f64,
    /// ... and, when its past is known, this multiple of its own normal rate.
    pub key_baseline_factor: f64,
    /// How long a key's penalty lasts.
    pub penalty_ttl: Duration,
    /// Keys never penalised.
    pub allow_list: Vec<String>,
    /// Report actions without applying them.
    pub shadow: bool,
    /// Newcomers' requests (clients not established, see [`Cohorts`](crate::Cohorts)) above this
    /// multiple of their normal level, during an anomaly that hurts the backend, are met with a
    /// shared budget for newcomers before the global limit is touched.
    pub newcomer_factor: f64,
    /// The newcomers' budget per tick: this multiple of their normal requests per tick...
    pub newcomer_headroom: f64,
    /// ... and at least this many.
    pub newcomer_floor: u32,
    /// Ticks after start before the newcomers' normal level is learned. Until the cohorts have
    /// seen three epochs ([`CohortConfig::epoch_ticks`](crate::CohortConfig)) nobody can be
    /// established, so everyone is a newcomer; a level learned then would be the whole traffic,
    /// and a flood soon after start would not stand out from it (the global limit would be cut
    /// instead of the newcomers' budget set).
    pub newcomer_warmup_ticks: u64,
    /// Score each tick's feature vector (rate, limited and error ratios, latency, sources, top
    /// share, entropy) with a random cut forest; a score at or above `forest_threshold` is
    /// suspicious. `None`: off.
    #[cfg(feature = "forest")]
    pub forest: Option<crate::forest::ForestConfig>,
    /// The forest score that makes a tick suspicious.
    #[cfg(feature = "forest")]
    pub forest_threshold: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            tick: Duration::from_secs(1),
            detector: DetectorConfig::default(),
            suspect_score: 0.27,
            elevated_factor: 1.5,
            sources_factor: 2.0,
            cusum_threshold: 8.0,
            confirm_ticks: 3,
            quiet_ticks: 30,
            tighten_factor: 0.5,
            floor: 0.1,
            relax_step: 0.1,
            latency_factor: 2.0,
            error_margin: 0.05,
            key_dimensions: vec![Dimension::Client, Dimension::ApiKey],
            key_min_requests: 20,
            key_peer_factor: 20.0,
            key_baseline_factor: 5.0,
            penalty_ttl: Duration::from_secs(300),
            allow_list: Vec::new(),
            shadow: false,
            newcomer_factor: 3.0,
            newcomer_headroom: 1.0,
            newcomer_floor: 10,
            // Two epochs of the monitor's default cohorts.
            newcomer_warmup_ticks: 90,
            #[cfg(feature = "forest")]
            forest: None,
            #[cfg(feature = "forest")]
            forest_threshold: 0.75,
        }
    }
}
