//! NAB's results layout, so that NAB's own scorer can score our detector: one CSV per series,
//! `timestamp,value,anomaly_score,label`, under `<dir>/<detector>/<category>/<detector>_<file>`.
//!
//! With a checkout of NAB, copy `<dir>/<detector>` into its `results/` and run
//! `python run.py -d <detector> --optimize --score --normalize --skipConfirmation`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Corpus, NabError};

/// Writes one results file per series of `corpus`, with `scores[i]` for series `i`; returns the
/// files written.
pub fn write_results(
    dir: &Path,
    detector: &str,
    corpus: &Corpus,
    scores: &[Vec<f64>],
) -> Result<Vec<PathBuf>, NabError> {
    let mut written = Vec::with_capacity(corpus.series.len());
    for (series, scores) in corpus.series.iter().zip(scores) {
        let (category, file) = series.name.rsplit_once('/').unwrap_or(("", &series.name));
        let path = dir
            .join(detector)
            .join(category)
            .join(format!("{detector}_{file}"));
        let mut text = String::from("timestamp,value,anomaly_score,label\n");
        for (row, (&time, &value)) in series.timestamps.iter().zip(&series.values).enumerate() {
            let label = series.windows.iter().any(|&(a, b)| (a..=b).contains(&row));
            let score = scores.get(row).copied().unwrap_or(0.0);
            let _ = writeln!(
                text,
                "{},{value},{score},{}",
                format_time(time),
                u8::from(label)
            );
        }
        let io = |source| NabError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

/// Seconds since the Unix epoch as NAB writes them: `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_time(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nab::{Series, parse_time};

    #[test]
    fn times_are_written_as_nab_reads_them() {
        for text in [
            "1970-01-01 00:00:00",
            "2014-02-28 23:59:59",
            "2014-03-01 00:00:00",
            "2016-02-29 12:34:56",
            "1999-12-31 23:00:05",
        ] {
            let seconds = parse_time(text).unwrap_or(i64::MIN);
            assert_eq!(format_time(seconds), text);
        }
    }

    #[test]
    fn one_file_per_series_in_nabs_layout() {
        let corpus = Corpus {
            series: vec![Series {
                name: "artificialWithAnomaly/art_tiny.csv".into(),
                timestamps: vec![0, 300, 600],
                values: vec![1.0, 9.0, 1.0],
                windows: vec![(1, 1)],
            }],
            profiles: Vec::new(),
        };
        let dir = std::env::temp_dir().join(format!("nab-results-{}", std::process::id()));
        let written =
            write_results(&dir, "ratelimit", &corpus, &[vec![0.0, 0.9, 0.1]]).unwrap_or_default();
        let expected = dir.join("ratelimit/artificialWithAnomaly/ratelimit_art_tiny.csv");
        assert_eq!(written, vec![expected.clone()]);
        let text = std::fs::read_to_string(&expected).unwrap_or_default();
        assert_eq!(
            text,
            "timestamp,value,anomaly_score,label\n\
             1970-01-01 00:00:00,1,0,0\n\
             1970-01-01 00:05:00,9,0.9,1\n\
             1970-01-01 00:10:00,1,0.1,0\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
