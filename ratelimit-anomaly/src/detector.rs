//! The global-rate detector: one value per tick in, an anomaly score in [0, 1] out.
//!
//! Each tick's value gets a *surprise*, in standard deviations:
//! - from a learned baseline (an EWMA mean and spread over the last few hundred ticks);
//! - from the daily seasonal baseline of its time of day, when timestamps are given and the day
//!   has been seen a few times: a rise the time of day explains is no surprise;
//! - plus a heavy weight for going past every value seen so far, in range widths: floods and
//!   collapses are new extremes.
//!
//! The score is `surprise / (surprise + 10)`: ten standard deviations score 0.5. After a score at
//! or above the alarm level, scores are halved for a while, so that the rest of the same event
//! ranks below fresh events and only a much larger one stands out: an operator (and the NAB
//! scoring) wants one report per event, not a run of them.

use crate::baseline::Ewma;

/// How the detector learns and reacts. The defaults were tuned on the NAB subset shipped with the
/// crate (`nab/`); see the crate documentation for the scores they reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Half-life, in ticks, of the baseline mean and spread.
    pub baseline_half_life: f64,
    /// Ticks before the detector scores anything.
    pub warmup_ticks: u64,
    /// Weight of going past the range seen so far, per range width (capped at ten widths).
    pub novelty_weight: f64,
    /// A score at or above this is an alarm, after which scores are damped.
    pub alarm_level: f64,
    /// Ticks during which scores are damped after an alarm.
    pub hold_ticks: u64,
    /// What damped scores are multiplied by.
    pub damping: f64,
    /// Buckets the day is cut into for the seasonal baseline (0: none).
    pub seasonal_buckets: usize,
    /// Half-life, in days, of each time-of-day bucket's baseline.
    pub seasonal_half_life_days: f64,
    /// Days of history a bucket needs before it is trusted.
    pub seasonal_min_days: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            baseline_half_life: 100.0,
            warmup_ticks: 100,
            novelty_weight: 200.0,
            alarm_level: 0.27,
            hold_ticks: 200,
            damping: 0.5,
            seasonal_buckets: 24,
            seasonal_half_life_days: 5.0,
            seasonal_min_days: 1.6,
        }
    }
}

/// A streaming anomaly detector for one series (the global request rate, say). Constant memory:
/// a baseline, a range, and one small baseline per time-of-day bucket.
#[derive(Debug, Clone)]
pub struct RateDetector {
    config: DetectorConfig,
    baseline: Ewma,
    range: Option<(f64, f64)>,
    ticks: u64,
    since_alarm: u64,
    /// Seconds between ticks, learned from the timestamps: sizes the seasonal baselines.
    interval: Ewma,
    last_seen_at: Option<i64>,
    seasonal: Vec<Option<(Ewma, u64)>>,
}

impl RateDetector {
    /// A detector with `config`.
    pub fn new(config: DetectorConfig) -> Self {
        RateDetector {
            config,
            baseline: Ewma::with_half_life(config.baseline_half_life),
            range: None,
            ticks: 0,
            since_alarm: u64::MAX,
            interval: Ewma::with_half_life(50.0),
            last_seen_at: None,
            seasonal: vec![None; config.seasonal_buckets],
        }
    }

    /// Scores `value` (this tick's rate) in [0, 1], then learns from it. Non-finite values score 0
    /// and are not learned.
    pub fn update(&mut self, value: f64) -> f64 {
        self.update_at(None, value)
    }

    /// [`update`](Self::update) for a value observed at `unix_seconds`, which also learns and uses
    /// the daily seasonal baseline.
    pub fn update_at(&mut self, unix_seconds: Option<i64>, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        self.ticks += 1;
        let novelty = self.novelty_of(value);
        let mut surprise = distance(&self.baseline, value) + novelty;
        if let Some(seconds) = unix_seconds {
            if let Some(seasonal) = self.seasonal_surprise(seconds, value) {
                // No surprise if the time of day explains it; going past every value still counts.
                surprise = surprise.min(seasonal + novelty);
            }
            self.learn_seasonal(seconds, value);
        }
        self.baseline.update(value);
        self.range = Some(match self.range {
            None => (value, value),
            Some((low, high)) => (low.min(value), high.max(value)),
        });
        if self.ticks <= self.config.warmup_ticks {
            return 0.0;
        }
        let mut score = surprise / (surprise + 10.0);
        self.since_alarm = self.since_alarm.saturating_add(1);
        if self.since_alarm <= self.config.hold_ticks {
            // Within an event already reported.
            score *= self.config.damping;
        } else if score >= self.config.alarm_level {
            self.since_alarm = 0;
        }
        score
    }

    /// What the seasonal baseline expects at `unix_seconds` (its time of day), once it has seen
    /// enough days of that time; `None` before, or without seasonal buckets.
    pub fn expected_at(&self, unix_seconds: i64) -> Option<f64> {
        let (baseline, seen) = self.seasonal[self.bucket_of(unix_seconds)?].as_ref()?;
        let needed = self.config.seasonal_min_days * self.ticks_per_bucket_day();
        (*seen as f64 >= needed).then(|| baseline.mean())
    }

    /// How far `value` goes past the range seen so far, weighted, in range widths.
    fn novelty_of(&self, value: f64) -> f64 {
        let Some((low, high)) = self.range else {
            return 0.0;
        };
        if self.ticks <= self.config.warmup_ticks {
            return 0.0;
        }
        let width = (high - low).max(spread_floor(self.baseline.mean()));
        let widths = if value > high {
            (value - high) / width
        } else if value < low {
            (low - value) / width
        } else {
            0.0
        };
        self.config.novelty_weight * widths.min(10.0)
    }

    fn bucket_of(&self, unix_seconds: i64) -> Option<usize> {
        let buckets = self.seasonal.len();
        (buckets > 0).then(|| unix_seconds.rem_euclid(86_400) as usize * buckets / 86_400)
    }

    /// Ticks that fall in one bucket in one day, at the learned tick interval.
    fn ticks_per_bucket_day(&self) -> f64 {
        let bucket_seconds = 86_400.0 / self.seasonal.len().max(1) as f64;
        (bucket_seconds / self.interval.mean().max(1e-3)).max(1.0)
    }

    fn seasonal_surprise(&self, unix_seconds: i64, value: f64) -> Option<f64> {
        let (baseline, seen) = self.seasonal[self.bucket_of(unix_seconds)?].as_ref()?;
        let needed = self.config.seasonal_min_days * self.ticks_per_bucket_day();
        (*seen as f64 >= needed).then(|| distance(baseline, value))
    }

    fn learn_seasonal(&mut self, unix_seconds: i64, value: f64) {
        if let Some(last) = self.last_seen_at {
            if unix_seconds > last {
                self.interval.update((unix_seconds - last) as f64);
            }
        }
        self.last_seen_at = Some(unix_seconds);
        if self.interval.seen() == 0 {
            return; // the interval, and so the baselines' memory, is not known yet
        }
        let half_life = self.config.seasonal_half_life_days * self.ticks_per_bucket_day();
        if let Some(bucket) = self.bucket_of(unix_seconds) {
            let (baseline, seen) =
                self.seasonal[bucket].get_or_insert_with(|| (Ewma::with_half_life(half_life), 0));
            baseline.update(value);
            *seen += 1;
        }
    }
}

/// A floor on a spread: a flat series must not turn rounding into infinite surprise.
fn spread_floor(mean: f64) -> f64 {
    (mean.abs() * 1e-3).max(1e-9)
}

/// `value`'s distance from `baseline`, in its spreads (at most 50).
fn distance(baseline: &Ewma, value: f64) -> f64 {
    let spread = baseline.std_dev().max(spread_floor(baseline.mean()));
    ((value - baseline.mean()) / spread).abs().min(50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(step_max > 0.9, "the step scored only {step_max}");
        assert!(step_max > quiet_max, "{step_max} <= {quiet_max}");
    }

    #[test]
    fn an_event_is_reported_once_then_damped() {
        let config = DetectorConfig::default();
        let mut detector = RateDetector::new(config);
        for i in 0..1000 {
            detector.update(100.0 + (i % 5) as f64);
        }
        let first = detector.update(1_000.0);
        assert!(first >= config.alarm_level, "the flood scored {first}");
        for tick in 1..config.hold_ticks {
            let score = detector.update(1_000.0);
            assert!(
                score <= config.damping,
                "tick {tick} of the flood scored {score}"
            );
        }
    }

    #[test]
    fn the_time_of_day_explains_a_daily_peak() {
        // Five-minute ticks for ten days: a quiet night (100) and a busy afternoon (1,000).
        let rate = |t: i64| {
            if (t % 86_400) / 3_600 >= 12 {
                1_000.0
            } else {
                100.0
            }
        };
        let day = |days: i64, detector: &mut RateDetector| {
            let mut worst: f64 = 0.0;
            for step in 0..288 {
                let t = days * 86_400 + step * 300;
                worst = worst.max(detector.update_at(Some(t), rate(t)));
            }
            worst
        };
        let mut detector = RateDetector::new(DetectorConfig::default());
        for days in 0..9 {
            day(days, &mut detector);
        }
        let tenth = day(9, &mut detector);
        assert!(tenth < 0.1, "a peak seen every day scored {tenth}");
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut detector = RateDetector::new(DetectorConfig::default());
        assert_eq!(detector.update(f64::NAN), 0.0);
        assert_eq!(detector.update(f64::INFINITY), 0.0);
    }
}
