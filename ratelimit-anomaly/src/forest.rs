//! A random cut forest: a multivariate anomaly score for a stream of feature vectors.
//!
//! Trees are built as Guha et al.'s robust random cut forests build them: at each node, a
//! dimension is chosen with probability proportional to the range of the node's points in it, and
//! a cut is placed uniformly in that range. A point's score comes from how shallow it sits: the
//! forest is built on a sample of the recent stream, and a point that is cut off from the sample
//! near the root is unlike it. The score is isolation-forest normalised, `2^(-E[depth] / c(n))`,
//! in [0, 1], about 0.5 for an ordinary point and toward 1 for an outlier. Rather than the paper's
//! incremental insertion and deletion, the forest is rebuilt from a sliding window every
//! `rebuild_every` points: simpler, and the same model of "what the recent stream looks like".

use std::collections::VecDeque;

/// The forest's size and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForestConfig {
    /// Trees.
    pub trees: usize,
    /// Points each tree is built on (sampled from the window).
    pub sample: usize,
    /// Recent points kept to build trees from.
    pub window: usize,
    /// Points between rebuilds.
    pub rebuild_every: usize,
    /// The random seed.
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        ForestConfig {
            trees: 50,
            sample: 256,
            window: 1024,
            rebuild_every: 64,
            seed: 0x5eed,
        }
    }
}

enum Node {
    Leaf {
        size: usize,
    },
    Cut {
        dimension: usize,
        value: f64,
        left: Box<Node>,
        right: Box<Node>,
    },
}

/// A streaming random cut forest over vectors of one dimension count.
pub struct RandomCutForest {
    config: ForestConfig,
    window: VecDeque<Vec<f64>>,
    trees: Vec<Node>,
    since_rebuild: usize,
    rng: fastrand::Rng,
}

/// The average depth of an unsuccessful search in a binary search tree of `n` points: the
/// normaliser of isolation depth (Liu, Ting and Zhou).
fn average_depth(n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    2.0 * ((n - 1.0).ln() + 0.577_215_664_9) - 2.0 * (n - 1.0) / n
}

impl RandomCutForest {
    /// An empty forest.
    pub fn new(config: ForestConfig) -> Self {
        RandomCutForest {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            window: VecDeque::new(),
            trees: Vec::new(),
            since_rebuild: 0,
        }
    }

    /// Scores `point` against the recent stream (0 until there is a forest), then adds it.
    pub fn update(&mut self, point: &[f64]) -> f64 {
        let score = self.score(point);
        if self.window.front().is_some_and(|p| p.len() != point.len()) {
            self.window.clear(); // a stream of another shape starts over
            self.trees.clear();
        }
        self.window.push_back(point.to_vec());
        if self.window.len() > self.config.window {
            self.window.pop_front();
        }
        self.since_rebuild += 1;
        if self.trees.is_empty() && self.window.len() >= 32
            || self.since_rebuild >= self.config.rebuild_every
        {
            self.rebuild();
        }
        score
    }

    /// The score of `point` against the forest as it stands, in [0, 1].
    pub fn score(&self, point: &[f64]) -> f64 {
        if self.trees.is_empty() || point.iter().any(|v| !v.is_finite()) {
            return 0.0;
        }
        let sample = self.config.sample.min(self.window.len());
        let depth: f64 = self
            .trees
            .iter()
            .map(|tree| depth_of(tree, point, 0))
            .sum::<f64>()
            / self.trees.len() as f64;
        2f64.powf(-depth / average_depth(sample).max(1e-9))
    }

    fn rebuild(&mut self) {
        self.since_rebuild = 0;
        let points: Vec<&Vec<f64>> = self.window.iter().collect();
        let sample = self.config.sample.min(points.len());
        let limit = (sample as f64).log2().ceil() as usize + 4;
        self.trees = (0..self.config.trees)
            .map(|_| {
                let mut chosen: Vec<&[f64]> = (0..sample)
                    .map(|_| points[self.rng.usize(0..points.len())].as_slice())
                    .collect();
                build(&mut chosen, 0, limit, &mut self.rng)
            })
            .collect();
    }
}

/// Builds a tree on `points` with RCF cuts, down to single points or `limit` levels.
fn build(points: &mut [&[f64]], depth: usize, limit: usize, rng: &mut fastrand::Rng) -> Node {
    if points.len() <= 1 || depth >= limit {
        return Node::Leaf { size: points.len() };
    }
    let dimensions = points[0].len();
    let ranges: Vec<(f64, f64)> = (0..dimensions)
        .map(|d| {
            points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                    (lo.min(p[d]), hi.max(p[d]))
                })
        })
        .collect();
    let total: f64 = ranges.iter().map(|(lo, hi)| hi - lo).sum();
    if total <= 0.0 || !total.is_finite() {
        return Node::Leaf { size: points.len() }; // all points equal: nothing to cut
    }
    // A dimension in proportion to its range, then a cut uniform in it: one draw does both.
    let mut draw = rng.f64() * total;
    let mut dimension = 0;
    for (d, (lo, hi)) in ranges.iter().enumerate() {
        if draw < hi - lo {
            dimension = d;
            break;
        }
        draw -= hi - lo;
        dimension = d;
    }
    let (lo, hi) = ranges[dimension];
    let value = (lo + draw).min(hi);
    let mut split = 0;
    for i in 0..points.len() {
        if points[i][dimension] <= value {
            points.swap(i, split);
            split += 1;
        }
    }
    let (left, right) = points.split_at_mut(split);
    Node::Cut {
        dimension,
        value,
        left: Box::new(build(left, depth + 1, limit, rng)),
        right: Box::new(build(right, depth + 1, limit, rng)),
    }
}

/// The depth at which `point` leaves the tree, plus the expected depth left in a leaf it shares.
fn depth_of(node: &Node, point: &[f64], depth: usize) -> f64 {
    match node {
        Node::Leaf { size } => depth as f64 + average_depth(*size),
        Node::Cut {
            dimension,
            value,
            left,
            right,
        } => {
            let next = if point.get(*dimension).copied().unwrap_or(0.0) <= *value {
                left
            } else {
                right
            };
            depth_of(next, point, depth + 1)
        }
    }
}

impl std::fmt::Debug for RandomCutForest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomCutForest")
            .field("config", &self.config)
            .field("window", &self.window.len())
            .field("trees", &self.trees.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(rng: &mut fastrand::Rng) -> f64 {
        // Box-Muller.
        let (u, v) = (rng.f64().max(1e-12), rng.f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn an_outlier_scores_above_the_cluster() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut forest = RandomCutForest::new(ForestConfig::default());
        for _ in 0..1024 {
            forest.update(&[normal(&mut rng), normal(&mut rng), normal(&mut rng)]);
        }
        let mut inliers: Vec<f64> = (0..500)
            .map(|_| forest.score(&[normal(&mut rng), normal(&mut rng), normal(&mut rng)]))
            .collect();
        inliers.sort_by(f64::total_cmp);
        let p99 = inliers[495];
        let outlier = forest.score(&[6.0, -6.0, 6.0]);
        assert!(outlier > p99, "outlier {outlier} <= inliers' p99 {p99}");
        assert!(outlier > 0.65, "{outlier}");
        assert!(
            (0.35..0.6).contains(&inliers[250]),
            "median inlier {}",
            inliers[250]
        );
    }

    #[test]
    fn a_point_off_a_correlation_is_found_though_each_coordinate_is_ordinary() {
        // x and y move together; (2, -2) is ordinary in each coordinate, not in both.
        let mut rng = fastrand::Rng::with_seed(5);
        let mut forest = RandomCutForest::new(ForestConfig::default());
        for _ in 0..1024 {
            let x = normal(&mut rng) * 2.0;
            forest.update(&[x, x + normal(&mut rng) * 0.1]);
        }
        let on_line = forest.score(&[2.0, 2.0]);
        let off_line = forest.score(&[2.0, -2.0]);
        assert!(off_line > on_line + 0.1, "off {off_line}, on {on_line}");
    }

    #[test]
    fn same_seed_same_scores() {
        let run = || {
            let mut forest = RandomCutForest::new(ForestConfig::default());
            (0..300)
                .map(|i| forest.update(&[f64::from(i % 17), f64::from(i % 5)]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
