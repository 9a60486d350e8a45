//! NAB's windowed Gaussian, the reference detector that checks the scoring against NAB's own.

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
