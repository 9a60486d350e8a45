//! A learned baseline: exponentially weighted mean and variance, optionally per hour of the day.

/// Exponentially weighted moving mean and variance (West's incremental form).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    variance: f64,
    seen: u64,
}

impl Ewma {
    /// A baseline that forgets with a half-life of `half_life` updates (at least 1).
    pub fn with_half_life(half_life: f64) -> Self {
        let alpha = 1.0 - 0.5f64.powf(1.0 / half_life.max(1.0));
        Ewma {
            alpha,
            mean: 0.0,
            variance: 0.0,
            seen: 0,
        }
    }

    /// Folds in one observation.
    pub fn update(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.seen += 1;
        if self.seen == 1 {
            self.mean = value;
            return;
        }
        // Early on, weigh like a plain average so the first value does not dominate.
        let alpha = self.alpha.max(1.0 / self.seen as f64);
        let delta = value - self.mean;
        self.mean += alpha * delta;
        self.variance = (1.0 - alpha) * (self.variance + alpha * delta * delta);
    }

    /// The current mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The current standard deviation.
    pub fn std_dev(&self) -> f64 {
        self.variance.sqrt()
    }

    /// Observations folded in so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_constant() {
        let mut e = Ewma::with_half_life(10.0);
        for _ in 0..200 {
            e.update(5.0);
        }
        assert!((e.mean() - 5.0).abs() < 1e-12);
        assert!(e.std_dev() < 1e-9);
    }

    #[test]
    fn tracks_mean_and_spread() {
        let mut e = Ewma::with_half_life(200.0);
        for i in 0..5000 {
            e.update(if i % 2 == 0 { 9.0 } else { 11.0 });
        }
        assert!((e.mean() - 10.0).abs() < 0.05, "{}", e.mean());
        assert!((e.std_dev() - 1.0).abs() < 0.05, "{}", e.std_dev());
    }

    #[test]
    fn ignores_nan() {
        let mut e = Ewma::with_half_life(10.0);
        e.update(1.0);
        e.update(f64::NAN);
        assert_eq!(e.mean(), 1.0);
        assert_eq!(e.seen(), 1);
    }
}
