//! Anomaly detection beside the rate limiter: see floods and abusers coming.
//!
//! ```
//! use ratelimit_anomaly::{DetectorConfig, RateDetector};
//!
//! // One value per tick: the global request rate, say.
//! let mut detector = RateDetector::new(DetectorConfig::default());
//! let mut score = 0.0;
//! for tick in 0..600 {
//!     let rate = if tick < 500 { 1_000.0 + (tick % 7) as f64 * 10.0 } else { 9_000.0 };
//!     score = f64::max(score, detector.update(rate));
//! }
//! assert!(score > 0.99, "a ninefold flood scored {score}");
//! ```
//!
//! # The parts
//!
//! - **Hot path** ([`Monitor`]): per request, constant time and no locks: per dimension (client,
//!   API key, route) a count-min sketch over two rotating windows, a top-k table of heavy hitters
//!   and a HyperLogLog of distinct keys ([`sketch`]); globally, requests, limited, 4xx/5xx, in
//!   flight and a latency histogram. Memory is fixed when it is made (about 1.5 MiB by default),
//!   however many keys there are.
//! - **Side path** (once a tick, [`Monitor::tick`] then [`Controller::on_tick`]): the global rate
//!   against a learned baseline with a daily seasonal component ([`RateDetector`]), a CUSUM for
//!   sustained shifts and a detector on the rate rolled up per minute; each heavy key against its
//!   peers and its own past; each heavy route against its past; the source distribution (distinct
//!   sources, top share, entropy); a health gate (p99 latency, error ratio against their normal
//!   levels), so a flash crowd on a healthy backend is watched, not throttled; and, with the
//!   `forest` feature, a random cut forest on the whole feature vector (`forest` module).
//! - **Decisions** ([`Controller`]): normal, suspect, mitigating, recovering, with hysteresis;
//!   actions with their reasons: penalise a key for a time to live, tighten the route carrying a
//!   surge or else the global limit multiplicatively down to a floor, relax additively after a
//!   quiet period; shadow mode and an allow list.
//! - **Wiring**: `tick::spawn` (feature `tokio`) runs the tick on tokio with any [`Actuator`];
//!   `tower::TowerObserver` (feature `tower`) feeds the monitor from a ratelimit-tower layer and
//!   `tower::TowerActuator` applies actions through its handle (`tower::spawn` is the same tick);
//!   [`KeyedLimiterActuator`] applies them to a core `KeyedLimiter`.
//!
//! # Measured
//!
//! The `nab` module (feature `nab`) scores a detector on the Numenta Anomaly Benchmark; the subset
//! in `nab/` of the repository (48 series, 83 windows, with NAB's licence; left out of the
//! published package) is scored by
//! `cargo run --release -p ratelimit-anomaly --features nab,forest --example nab`. With its default settings (tuned on
//! that subset) [`RateDetector`] scores 65.0 on the standard profile, 56.8 on reward_low_FP_rate
//! and 69.4 on reward_low_FN_rate; published on the same subset: Numenta HTM 70.9 / 65.0 / 75.0,
//! Random Cut Forest 56.2 / 45.2 / 64.0, windowed Gaussian 35.0 / 22.7 / 41.0 (which the scorer
//! reproduces: `--windowed-gaussian`). The labelled traffic scenarios (the `scenario` module,
//! feature `scenarios`) run with
//! `cargo run --release -p ratelimit-anomaly --features scenarios --example scenarios -- --plot DIR`.
//!
//! # Features
//!
//! None is on by default: the detectors, the monitor and the controller need none.
//!
//! - `tokio`: the tick task on tokio (`tick` module).
//! - `tower`: the observer and actuator for ratelimit-tower's layer (and `tokio`).
//! - `forest`: a random cut forest on each tick's feature vector.
//! - `nab`: the NAB corpus reader and scorer (`nab` module).
//! - `scenarios`: the labelled traffic scenarios and their simulation (`scenario` module).

mod actuator;
mod baseline;
pub mod cohort;
mod controller;
mod detector;
#[cfg(feature = "forest")]
pub mod forest;
mod health;
mod monitor;
#[cfg(feature = "nab")]
pub mod nab;
#[cfg(feature = "scenarios")]
pub mod scenario;
pub mod sketch;
#[cfg(feature = "tokio")]
pub mod tick;
#[cfg(feature = "tower")]
pub mod tower;

pub use actuator::{Actuator, KeyedLimiterActuator, scaled};
pub use baseline::Ewma;
pub use cohort::{CohortConfig, Cohorts, Learning, Persistence, PersistenceConfig};
pub use controller::{
    Action, Cohort, Controller, ControllerConfig, Decided, Reason, Signal, State, Until,
};
pub use detector::{DetectorConfig, RateDetector};
pub use health::CohortHealth;
pub use monitor::{
    Dimension, DimensionStats, Monitor, MonitorConfig, RequestEvent, Standing, TickStats,
};
