//! The score: where each detection falls against the windows, and the threshold sweep.

use super::{Corpus, Profile};

/// Rows at the start of a file whose detections are ignored.
pub fn probation(rows: usize) -> usize {
    ((rows as f64 * 0.15).floor() as usize).min(750)
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
