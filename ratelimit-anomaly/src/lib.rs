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
//! [`nab`] scores a detector on the Numenta Anomaly Benchmark; the subset shipped in `nab/` (with
//! its licence) is scored by `cargo run --release -p ratelimit-anomaly --example nab`.

mod baseline;
mod detector;
pub mod nab;

pub use baseline::Ewma;
pub use detector::{DetectorConfig, RateDetector};
