//! The scorer end to end: NAB's own windowed-Gaussian detector, scored on the shipped subset,
//! lands on its published scores (35.0 / 22.7 / 41.0) within the rounding of a threshold sweep.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ratelimit_anomaly::nab::{Corpus, WindowedGaussian, score};

#[test]
fn windowed_gaussian_scores_as_published() {
    let corpus = Corpus::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("nab")).unwrap();
    assert_eq!(corpus.series.len(), 48);
    assert_eq!(corpus.windows(), 83);
    let scores: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|series| {
            let mut detector = WindowedGaussian::new();
            series.values.iter().map(|&v| detector.update(v)).collect()
        })
        .collect();
    for (profile, published) in corpus.profiles.iter().zip([35.0, 22.7, 41.0]) {
        let result = score(&corpus, &scores, profile);
        assert!(
            (result.score - published).abs() < 0.6,
            "{}: {:.2}, published {published}",
            profile.name,
            result.score
        );
    }
}
