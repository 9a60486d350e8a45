//! The global-rate detector: one number per tick in, an anomaly score in [0, 1] out.
//!
//! Three steps, each cheap and streaming:
//! 1. **Surprise.** How far the tick's value is from a learned baseline (an EWMA mean and spread)
//!    in standard deviations, plus how far it goes past everything seen so far: floods and drops
//!    are new extremes, and a level that stays new stays surprising until the baseline learns it.
//! 2. **Likelihood.** The recent average surprise against the long-run distribution of surprise,
//!    as a probability (after Numenta's "anomaly likelihood"): a series that is always noisy does
//!    not alarm on its noise; a quiet one alarms on a small change.
//! 3. **Once per event.** After an alarm, scores are damped for a while: one event is one alarm,
//!    not a run of them, which is what an operator (and the NAB scoring) wants.

use crate::baseline::Ewma;

/// How the detector learns and reacts. The defaults were tuned on the NAB subset shipped with the
/// crate (`nab/`); see the crate's README for the scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Half-life, in ticks, of the baseline mean and spread.
    pub baseline_half_life: f64,
    /// Ticks averaged into the recent surprise.
    pub recent_ticks: usize,
    /// Half-life, in ticks, of the long-run distribution of surprise.
    pub surprise_half_life: f64,
    /// Ticks before the detector scores anything.
    pub warmup_ticks: u64,
    /// Weight of going past the range seen so far, per range width.
    pub novelty_weight: f64,
    /// Ticks during which scores are damped after an alarm.
    pub hold_ticks: u64,
    /// A score at or above this is an alarm (for damping only; callers pick their own threshold).
    pub alarm_level: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            baseline_half_life: 300.0,
            recent_ticks: 8,
            surprise_half_life: 1000.0,
            warmup_ticks: 100,
            novelty_weight: 4.0,
            hold_ticks: 200,
            alarm_level: 0.999,
        }
    }
}

/// A streaming anomaly detector for one series (the global request rate, say).
#[derive(Debug, Clone)]
pub struct RateDetector {
    config: DetectorConfig,
    baseline: Ewma,
    surprise: Ewma,
    recent: Vec<f64>,
    recent_next: usize,
    range: Option<(f64, f64)>,
    ticks: u64,
    since_alarm: u64,
}

impl RateDetector {
    /// A detector with `config`.
    pub fn new(config: DetectorConfig) -> Self {
        RateDetector {
            config,
            baseline: Ewma::with_half_life(config.baseline_half_life),
            surprise: Ewma::with_half_life(config.surprise_half_life),
            recent: vec![0.0; config.recent_ticks.max(1)],
            recent_next: 0,
            range: None,
            ticks: 0,
            since_alarm: u64::MAX,
        }
    }

    /// Scores `value` (this tick's rate) in [0, 1], then learns from it. A non-finite value scores
    /// 0 and is not learned.
    pub fn update(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        self.ticks += 1;
        let surprise = self.surprise_of(value);
        self.learn(value);

        // The recent average surprise, against its long-run distribution.
        self.recent[self.recent_next] = surprise;
        self.recent_next = (self.recent_next + 1) % self.recent.len();
        let recent = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let spread = self.surprise.std_dev().max(1e-3);
        let z = (recent - self.surprise.mean()) / spread;
        self.surprise.update(surprise);
        if self.ticks <= self.config.warmup_ticks {
            return 0.0;
        }
        let mut score = normal_cdf(z);
        self.since_alarm = self.since_alarm.saturating_add(1);
        if self.since_alarm <= self.config.hold_ticks {
            // Within an event already reported: keep its score low, but let a much larger one through.
            score *= 0.5;
        } else if score >= self.config.alarm_level {
            self.since_alarm = 0;
        }
        score
    }

    /// How unusual `value` is before it is learned: distance from the baseline in spreads, plus
    /// distance past the range seen so far in range widths.
    fn surprise_of(&self, value: f64) -> f64 {
        let mean = self.baseline.mean();
        // A floor on the spread: a flat series must not turn rounding into infinite surprise.
        let floor = (mean.abs() * 1e-3).max(1e-9);
        let spread = self.baseline.std_dev().max(floor);
        let distance = ((value - mean) / spread).abs().min(50.0);
        let novelty = match self.range {
            Some((low, high)) if self.ticks > self.config.warmup_ticks => {
                let width = (high - low).max(floor);
                if value > high {
                    (value - high) / width
                } else if value < low {
                    (low - value) / width
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        distance + self.config.novelty_weight * novelty.min(10.0)
    }

    fn learn(&mut self, value: f64) {
        self.baseline.update(value);
        self.range = Some(match self.range {
            None => (value, value),
            Some((low, high)) => (low.min(value), high.max(value)),
        });
    }
}

/// The standard normal distribution function, accurate in the far tails (scores near 1 must stay
/// distinct, or the choice of threshold cannot separate them).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_is_right() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
        assert!((normal_cdf(-1.96) - 0.025).abs() < 1e-3);
    }

    #[test]
    fn a_step_scores_higher_than_the_noise_before_it() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut detector = RateDetector::new(DetectorConfig::default());
        let mut quiet_max: f64 = 0.0;
        for _ in 0..2000 {
            quiet_max = quiet_max.max(detector.update(100.0 + rng.f64() * 10.0));
        }
        let mut step_max: f64 = 0.0;
        for _ in 0..20 {
            step_max = step_max.max(detector.update(300.0 + rng.f64() * 10.0));
        }
        assert!(step_max > 0.99, "the step scored only {step_max}");
        assert!(step_max > quiet_max, "{step_max} <= {quiet_max}");
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut detector = RateDetector::new(DetectorConfig::default());
        assert_eq!(detector.update(f64::NAN), 0.0);
        assert_eq!(detector.update(f64::INFINITY), 0.0);
    }
}
