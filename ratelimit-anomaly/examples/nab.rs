//! Scores the global-rate detector on a directory of NAB series and prints the three profiles.
//!
//! `cargo run --release -p ratelimit-anomaly --example nab -- [DIR] [--set name=value]...`
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ratelimit_anomaly::forest::{ForestConfig, RandomCutForest};
use ratelimit_anomaly::nab::{Corpus, WindowedGaussian, score, write_results};
use ratelimit_anomaly::{DetectorConfig, RateDetector};

/// Score the global-rate detector on the Numenta Anomaly Benchmark.
#[derive(Parser)]
struct Args {
    /// A NAB directory: data/, labels/combined_windows.json, profiles.json.
    #[arg(default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/nab"))]
    dir: PathBuf,
    /// Score NAB's windowed-Gaussian reference detector instead (published: 35.0 / 22.7 / 41.0).
    #[arg(long)]
    windowed_gaussian: bool,
    /// Score the random cut forest (50 trees, shingles of `--shingle` values) instead.
    #[arg(long)]
    forest: bool,
    /// Values per shingle for `--forest`.
    #[arg(long, default_value_t = 8)]
    shingle: usize,
    /// Where to write NAB's results layout (`<dir>/<detector>/<category>/<detector>_<file>.csv`),
    /// for NAB's own scorer.
    #[arg(long, default_value = "target/nab/results")]
    results: PathBuf,
    /// Override a detector setting, e.g. `--set hold_ticks=100` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
}

fn configure(settings: &[String]) -> Result<DetectorConfig, String> {
    let mut config = DetectorConfig::default();
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--set {setting}: expected NAME=VALUE"))?;
        let number: f64 = value
            .parse()
            .map_err(|_| format!("--set {setting}: {value:?} is not a number"))?;
        match name {
            "baseline_half_life" => config.baseline_half_life = number,
            "warmup_ticks" => config.warmup_ticks = number as u64,
            "novelty_weight" => config.novelty_weight = number,
            "alarm_level" => config.alarm_level = number,
            "hold_ticks" => config.hold_ticks = number as u64,
            "damping" => config.damping = number,
            "seasonal_buckets" => config.seasonal_buckets = number as usize,
            "seasonal_half_life_days" => config.seasonal_half_life_days = number,
            "seasonal_min_days" => config.seasonal_min_days = number,
            _ => return Err(format!("--set {setting}: no setting named {name:?}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match configure(&args.settings) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let corpus = match Corpus::load(&args.dir) {
        Ok(corpus) => corpus,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let scores: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|series| {
            if args.forest {
                let mut forest = RandomCutForest::new(ForestConfig::default());
                let shingle = args.shingle.max(1);
                (0..series.values.len())
                    .map(|i| {
                        if i + 1 < shingle {
                            return 0.0;
                        }
                        forest.update(&series.values[i + 1 - shingle..=i])
                    })
                    .collect()
            } else if args.windowed_gaussian {
                let mut detector = WindowedGaussian::new();
                series.values.iter().map(|&v| detector.update(v)).collect()
            } else {
                let mut detector = RateDetector::new(config);
                series
                    .timestamps
                    .iter()
                    .zip(&series.values)
                    .map(|(&t, &v)| detector.update_at(Some(t), v))
                    .collect()
            }
        })
        .collect();
    println!(
        "{} series, {} windows, detector {config:?}",
        corpus.series.len(),
        corpus.windows()
    );
    println!(
        "{:<20} {:>7} {:>10} {:>4} {:>4} {:>5}",
        "profile", "score", "threshold", "TP", "FN", "FP"
    );
    for profile in &corpus.profiles {
        let result = score(&corpus, &scores, profile);
        println!(
            "{:<20} {:>7.1} {:>10.6} {:>4} {:>4} {:>5}",
            profile.name,
            result.score,
            result.threshold,
            result.true_positives,
            result.false_negatives,
            result.false_positives
        );
    }
    let detector = if args.forest {
        "ratelimitForest"
    } else if args.windowed_gaussian {
        "windowedGaussian"
    } else {
        "ratelimit"
    };
    match write_results(&args.results, detector, &corpus, &scores) {
        Ok(files) => println!(
            "NAB results layout: {} files under {}",
            files.len(),
            args.results.join(detector).display()
        ),
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
