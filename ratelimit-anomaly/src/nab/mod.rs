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

mod results;

pub use results::{format_time, write_results};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// One labelled series.
#[derive(Debug, Clone)]
pub struct Series {
    /// `category/name.csv`, as the labels name it.
    pub name: String,
    /// Seconds since the Unix epoch of each row.
    pub timestamps: Vec<i64>,
    /// The value of each row.
    pub values: Vec<f64>,
    /// The anomaly windows, as inclusive row ranges, in order.
    pub windows: Vec<(usize, usize)>,
}

/// Rows at the start of a file whose detections are ignored.
pub fn probation(rows: usize) -> usize {
    ((rows as f64 * 0.15).floor() as usize).min(750)
}

/// A corpus: every series of a NAB directory with its windows, and the profiles.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The series, sorted by name.
    pub series: Vec<Series>,
    /// The cost profiles, in the order standard, reward_low_FP_rate, reward_low_FN_rate.
    pub profiles: Vec<Profile>,
}

impl Corpus {
    /// Reads `dir/data/**.csv`, `dir/labels/combined_windows.json` and `dir/profiles.json`.
    pub fn load(dir: &Path) -> Result<Corpus, NabError> {
        let labels_path = dir.join("labels/combined_windows.json");
        let labels: HashMap<String, Vec<[String; 2]>> = serde_json::from_str(&read(&labels_path)?)
            .map_err(|e| malformed(&labels_path, 0, e))?;
        let profiles_path = dir.join("profiles.json");
        let profiles = parse_profiles(&profiles_path, &read(&profiles_path)?)?;
        let mut names: Vec<&String> = labels.keys().collect();
        names.sort();
        let mut series = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join("data").join(name);
            let (timestamps, values) = parse_csv(&path, &read(&path)?)?;
            let mut windows = Vec::new();
            for [start, end] in &labels[name] {
                let (start, end) = (
                    parse_time(start).ok_or_else(|| malformed(&labels_path, 0, start))?,
                    parse_time(end).ok_or_else(|| malformed(&labels_path, 0, end))?,
                );
                // Rows are in file order; a few NAB files step back in time (clock changes), so
                // the window is the span of rows whose time falls in it, found by scanning.
                let inside = |t: &i64| (start..=end).contains(t);
                if let (Some(first), Some(last)) = (
                    timestamps.iter().position(inside),
                    timestamps.iter().rposition(inside),
                ) {
                    windows.push((first, last));
                }
            }
            series.push(Series {
                name: name.clone(),
                timestamps,
                values,
                windows,
            });
        }
        Ok(Corpus { series, profiles })
    }

    /// The number of labelled windows in the corpus.
    pub fn windows(&self) -> usize {
        self.series.iter().map(|s| s.windows.len()).sum()
    }
}

fn read(path: &Path) -> Result<String, NabError> {
    std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, line: usize, message: impl std::fmt::Display) -> NabError {
    NabError::Malformed {
        path: path.to_owned(),
        line,
        message: message.to_string(),
    }
}

fn parse_profiles(path: &Path, text: &str) -> Result<Vec<Profile>, NabError> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| malformed(path, 0, e))?;
    let mut profiles = Vec::new();
    for name in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        let costs = &json[name]["CostMatrix"];
        let weight = |field: &str| {
            costs[field]
                .as_f64()
                .ok_or_else(|| malformed(path, 0, format!("{name}: no number {field}")))
        };
        profiles.push(Profile {
            name: name.to_string(),
            tp_weight: weight("tpWeight")?,
            fn_weight: weight("fnWeight")?,
            fp_weight: weight("fpWeight")?,
        });
    }
    Ok(profiles)
}

fn parse_csv(path: &Path, text: &str) -> Result<(Vec<i64>, Vec<f64>), NabError> {
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for (number, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (time, value) = line
            .split_once(',')
            .ok_or_else(|| malformed(path, number + 1, "expected `timestamp,value`"))?;
        let time = parse_time(time)
            .ok_or_else(|| malformed(path, number + 1, format!("bad timestamp {time:?}")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| malformed(path, number + 1, format!("bad value {value:?}")))?;
        timestamps.push(time);
        values.push(value);
    }
    Ok((timestamps, values))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` as seconds since the Unix epoch (UTC; fractions dropped).
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once(' ')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let time = time.split('.').next()?;
    let mut time = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `2·σ(-5y) - 1`: 1 (nearly) at y = -1, 0 at y = 0, toward -1 as y grows.
fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// The weight of a detection at `row` of a file whose windows are `windows`: earned in a window
/// (if it is the window's first detection), lost outside.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Inside window number `window` (corpus-wide), earning `earned` if first.
    InWindow { window: usize, earned: f64 },
    /// Outside every window, costing `cost` (negative).
    Outside { cost: f64 },
}

fn role(row: usize, windows: &[(usize, usize)], first_window: usize, profile: &Profile) -> Role {
    for (index, &(start, end)) in windows.iter().enumerate() {
        if (start..=end).contains(&row) {
            let y = if end == start {
                -1.0
            } else {
                -((end - row) as f64) / ((end - start) as f64)
            };
            return Role::InWindow {
                window: first_window + index,
                earned: profile.tp_weight * scaled_sigmoid(y) / 0.98661,
            };
        }
    }
    let preceding = windows.iter().rev().find(|&&(_, end)| end < row);
    let cost = match preceding {
        Some(&(start, end)) if end > start => {
            let y = (row - end) as f64 / (end - start) as f64;
            profile.fp_weight * scaled_sigmoid(y)
        }
        _ => -profile.fp_weight,
    };
    Role::Outside { cost }
}

/// A detector's result on one profile, at the threshold that maximises it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileScore {
    /// The profile.
    pub profile: Profile,
    /// The normalised score: 0 for a detector that never fires, 100 for a perfect one.
    pub score: f64,
    /// The best threshold (scores at or above it are detections).
    pub threshold: f64,
    /// The raw total at that threshold.
    pub raw: f64,
    /// Windows detected.
    pub true_positives: usize,
    /// Windows missed.
    pub false_negatives: usize,
    /// Detections outside every window.
    pub false_positives: usize,
}

/// Scores one detector's output on a corpus under `profile`: `scores[i]` are the scores it gave to
/// every row of `corpus.series[i]`, in order.
pub fn score(corpus: &Corpus, scores: &[Vec<f64>], profile: &Profile) -> ProfileScore {
    let windows = corpus.windows();
    let null = -(windows as f64) * profile.fn_weight;
    let perfect = windows as f64 * profile.tp_weight;
    // Every row past probation, with its role, by score from the highest down.
    let mut rows: Vec<(f64, Role)> = Vec::new();
    let mut first_window = 0;
    for (series, scores) in corpus.series.iter().zip(scores) {
        for (row, &score) in scores
            .iter()
            .enumerate()
            .skip(probation(series.values.len()))
        {
            rows.push((score, role(row, &series.windows, first_window, profile)));
        }
        first_window += series.windows.len();
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));

    // Lower the threshold one distinct score at a time, adding each row's contribution: a window
    // is worth its earliest detection, so a later-found earlier row replaces what it earned.
    let mut best_in_window: Vec<Option<f64>> = vec![None; windows];
    let (mut total, mut tp, mut fp) = (null, 0usize, 0usize);
    let mut best = (null, f64::INFINITY, 0usize, 0usize);
    let mut i = 0;
    while i < rows.len() {
        let threshold = rows[i].0;
        while i < rows.len() && rows[i].0 == threshold {
            match rows[i].1 {
                Role::InWindow { window, earned } => match best_in_window[window] {
                    None => {
                        total += profile.fn_weight + earned;
                        best_in_window[window] = Some(earned);
                        tp += 1;
                    }
                    Some(before) if earned > before => {
                        total += earned - before;
                        best_in_window[window] = Some(earned);
                    }
                    Some(_) => {}
                },
                Role::Outside { cost } => {
                    total += cost;
                    fp += 1;
                }
            }
            i += 1;
        }
        if total > best.0 {
            best = (total, threshold, tp, fp);
        }
    }
    let (raw, threshold, true_positives, false_positives) = best;
    ProfileScore {
        profile: profile.clone(),
        score: 100.0 * (raw - null) / (perfect - null),
        threshold,
        raw,
        true_positives,
        false_negatives: windows - true_positives,
        false_positives,
    }
}

/// NAB's "windowed Gaussian" reference detector, as NAB ships it: the tail probability of each value
/// under a normal fitted to the last 6,400 values, refitted every 100. Its published score on this
/// subset (35.0 / 22.7 / 41.0) checks this module's scoring end to end.
#[derive(Debug, Clone, Default)]
pub struct WindowedGaussian {
    window: std::collections::VecDeque<f64>,
    step: Vec<f64>,
    mean: f64,
    std_dev: f64,
}

impl WindowedGaussian {
    const WINDOW: usize = 6400;
    const STEP: usize = 100;

    /// A detector that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The score of `value`, then learns it.
    pub fn update(&mut self, value: f64) -> f64 {
        let score = if self.window.is_empty() {
            0.0
        } else {
            let z = (value - self.mean).abs() / self.std_dev;
            1.0 - 0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
        };
        if self.window.len() < Self::WINDOW {
            self.window.push_back(value);
            self.refit();
        } else {
            self.step.push(value);
            if self.step.len() == Self::STEP {
                self.window.drain(..Self::STEP);
                self.window.extend(self.step.drain(..));
                self.refit();
            }
        }
        score
    }

    fn refit(&mut self) {
        let n = self.window.len() as f64;
        self.mean = self.window.iter().sum::<f64>() / n;
        let variance = self
            .window
            .iter()
            .map(|v| (v - self.mean).powi(2))
            .sum::<f64>()
            / n;
        self.std_dev = if variance == 0.0 {
            0.000_001
        } else {
            variance.sqrt()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file of `rows` rows with the given windows.
    fn corpus(rows: usize, windows: Vec<(usize, usize)>) -> Corpus {
        Corpus {
            series: vec![Series {
                name: "test.csv".into(),
                timestamps: (0..rows as i64).collect(),
                values: vec![0.0; rows],
                windows,
            }],
            profiles: vec![Profile::standard()],
        }
    }

    fn firing_at(rows: usize, at: &[usize]) -> Vec<f64> {
        (0..rows)
            .map(|r| if at.contains(&r) { 1.0 } else { 0.0 })
            .collect()
    }

    /// NAB divides by 0.98661, a rounding of 2σ(5) - 1: an earliest detection earns 1.0000044, so
    /// hand-computed totals match to 1e-5 and normalised scores to 1e-3.
    const EPS: f64 = 1e-3;

    fn standard(corpus: &Corpus, scores: Vec<f64>) -> ProfileScore {
        score(corpus, &[scores], &Profile::standard())
    }

    #[test]
    fn probation_is_15_percent_up_to_750() {
        assert_eq!(probation(20), 3);
        assert_eq!(probation(1000), 150);
        assert_eq!(probation(10_000), 750);
    }

    #[test]
    fn earliest_detection_scores_100() {
        let c = corpus(20, vec![(10, 14)]);
        let s = standard(&c, firing_at(20, &[10]));
        assert!((s.score - 100.0).abs() < EPS, "{s:?}");
        assert_eq!(
            (s.true_positives, s.false_positives, s.false_negatives),
            (1, 0, 0)
        );
    }

    #[test]
    fn detection_at_the_window_end_earns_nothing() {
        // tp = 0: raw 0, null -1, perfect 1 → 50.
        let c = corpus(20, vec![(10, 14)]);
        let s = standard(&c, firing_at(20, &[14]));
        assert!((s.score - 50.0).abs() < EPS, "{s:?}");
    }

    #[test]
    fn only_the_first_detection_in_a_window_counts() {
        // Rows 10 and 12 both fire: the window earns the value of row 10 once.
        let c = corpus(20, vec![(10, 14)]);
        let s = standard(&c, firing_at(20, &[10, 12]));
        assert!((s.score - 100.0).abs() < EPS, "{s:?}");
        // Row 12 alone: y = -2/4 = -0.5, 2σ(2.5) - 1 = 0.848283..., / 0.98661.
        let s = standard(&c, firing_at(20, &[12]));
        let earned = (2.0 / (1.0 + (-2.5f64).exp()) - 1.0) / 0.98661;
        assert!((s.raw - earned).abs() < EPS, "{s:?}");
    }

    #[test]
    fn a_detector_that_never_fires_scores_0() {
        // Constant scores: the only thresholds are "everything fires" (80 false alarms outweigh
        // the window) and "nothing fires", which wins.
        let c = corpus(100, vec![(50, 54)]);
        let s = standard(&c, vec![0.0; 100]);
        assert!(s.score.abs() < EPS, "{s:?}");
        assert_eq!(s.false_negatives, 1);
    }

    #[test]
    fn false_positive_before_the_first_window_costs_the_full_weight() {
        // Row 5 and row 10 at the same score: 1 - 0.11 = 0.89 → 100 · 1.89 / 2 = 94.5.
        let c = corpus(20, vec![(10, 14)]);
        let s = standard(&c, firing_at(20, &[5, 10]));
        assert!((s.score - 94.5).abs() < EPS, "{s:?}");
        assert_eq!(s.false_positives, 1);
    }

    #[test]
    fn false_positive_just_after_a_window_costs_less() {
        // Row 16: y = 2/4 = 0.5 → 0.11 · (2σ(-2.5) - 1) = 0.11 · -0.848283...
        let c = corpus(30, vec![(10, 14)]);
        let s = standard(&c, firing_at(30, &[10, 16]));
        let cost = 0.11 * (2.0 / (1.0 + 2.5f64.exp()) - 1.0);
        assert!((s.raw - (1.0 + cost)).abs() < EPS, "{s:?}");
        // Row 28: y = 14/4 > 3 → the full 0.11.
        let s = standard(&c, firing_at(30, &[10, 28]));
        assert!((s.raw - 0.89).abs() < EPS, "{s:?}");
    }

    #[test]
    fn detections_in_probation_are_ignored() {
        // 20 rows: probation 3. A detection at row 1 costs nothing.
        let c = corpus(20, vec![(10, 14)]);
        let s = standard(&c, firing_at(20, &[1, 10]));
        assert!((s.score - 100.0).abs() < EPS, "{s:?}");
    }

    #[test]
    fn the_best_threshold_is_chosen() {
        // 30 rows, probation 4. Rows 3..8 score 0.95 (row 3 is in probation: four false alarms
        // before the window, 0.44 in all), row 10 (the window's first) 0.9, row 16 0.5.
        // At 0.95: -1 - 0.44; at 0.9: + 2 → 0.56; at 0.5: row 16 costs 0.11 · 0.848 more.
        let c = corpus(30, vec![(10, 14)]);
        let mut scores = vec![0.0; 30];
        for s in &mut scores[3..8] {
            *s = 0.95;
        }
        scores[10] = 0.9;
        scores[16] = 0.5;
        let s = standard(&c, scores);
        assert_eq!(s.threshold, 0.9);
        assert!((s.raw - 0.56).abs() < EPS, "{s:?}");
        assert!((s.score - 78.0).abs() < EPS, "{s:?}");
        assert_eq!(s.false_positives, 4);
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_time("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_time("2014-04-10 07:15:00.000000"),
            Some(1_397_114_100)
        );
        assert_eq!(parse_time("2014-13-10 07:15:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
