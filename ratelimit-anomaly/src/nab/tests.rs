//! The scoring rules on hand-made corpora whose scores are known.

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
