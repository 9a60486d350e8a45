//! The Numenta Anomaly Benchmark's scoring, in Rust: a corpus of labelled series, the three cost
//! profiles, and the threshold sweep that gives a detector its score.
//!
//! The rules, as `nab/README.md` restates them: each file is read in order with no look-ahead;
//! the first `min(⌊0.15·rows⌋, 750)` rows are probation and ignored; one threshold per profile,
//! the best for the whole corpus, turns scores into detections; the first detection in a window
//! earns `tp·(2σ(-5y) - 1)/0.98661` (y from -1 at the window's first row to 0 at its last); a
//! window with none costs `fn`; a detection outside every window costs `fp·(2σ(-5y) - 1)`, with y
//! the distance past the preceding window in window lengths (full cost past 3, or with no window
//! before it). The total is normalised between a detector that never fires (0) and a perfect one
//! (100).

mod corpus;
mod results;
mod scoring;
#[cfg(test)]
mod tests;
mod windowed_gaussian;

pub use corpus::{Corpus, Series, parse_time};
pub use results::{format_time, write_results};
pub use scoring::{ProfileScore, probation, score};
pub use windowed_gaussian::WindowedGaussian;

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong reading a NAB corpus.
#[derive(Debug, Error)]
pub enum NabError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what NAB files hold.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line (0 for the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One cost profile: how much a true positive earns and a false negative or positive costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The profile's name in `profiles.json`.
    pub name: String,
    /// Earned by a window's first detection at the window's start.
    pub tp_weight: f64,
    /// Lost by a window with no detection.
    pub fn_weight: f64,
    /// Lost by a detection far from any window.
    pub fp_weight: f64,
}

impl Profile {
    /// NAB's standard profile.
    pub fn standard() -> Self {
        Profile {
            name: "standard".into(),
            tp_weight: 1.0,
            fn_weight: 1.0,
            fp_weight: 0.11,
        }
    }
}
