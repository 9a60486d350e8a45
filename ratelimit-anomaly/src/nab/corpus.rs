//! A NAB corpus read from its directory: the series, their labelled windows and the profiles.

use std::collections::HashMap;
use std::path::Path;

use super::{NabError, Profile};

/// One labelled series.
#[derive(Debug, Clone)]
pub struct Series {
    /// `category/name.csv`, as the labels name it.
    pub name: String,
    /// Seconds since the Unix epoch of each row.
    pub timestamps: Vec<i64>,
    /// The value of each row.
    pub values: Vec<f64>,
    /// The anomaly windows, as inclusive row ranges, in order.
    pub windows: Vec<(usize, usize)>,
}

/// A corpus: every series of a NAB directory with its windows, and the profiles.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The series, sorted by name.
    pub series: Vec<Series>,
    /// The cost profiles, in the order standard, reward_low_FP_rate, reward_low_FN_rate.
    pub profiles: Vec<Profile>,
}

impl Corpus {
    /// Reads `dir/data/**.csv`, `dir/labels/combined_windows.json` and `dir/profiles.json`.
    pub fn load(dir: &Path) -> Result<Corpus, NabError> {
        let labels_path = dir.join("labels/combined_windows.json");
        let labels: HashMap<String, Vec<[String; 2]>> = serde_json::from_str(&read(&labels_path)?)
            .map_err(|e| malformed(&labels_path, 0, e))?;
        let profiles_path = dir.join("profiles.json");
        let profiles = parse_profiles(&profiles_path, &read(&profiles_path)?)?;
        let mut names: Vec<&String> = labels.keys().collect();
        names.sort();
        let mut series = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join("data").join(name);
            let (timestamps, values) = parse_csv(&path, &read(&path)?)?;
            let mut windows = Vec::new();
            for [start, end] in &labels[name] {
                let (start, end) = (
                    parse_time(start).ok_or_else(|| malformed(&labels_path, 0, start))?,
                    parse_time(end).ok_or_else(|| malformed(&labels_path, 0, end))?,
                );
                // Rows are in file order; a few NAB files step back in time (clock changes), so
                // the window is the span of rows whose time falls in it, found by scanning.
                let inside = |t: &i64| (start..=end).contains(t);
                if let (Some(first), Some(last)) = (
                    timestamps.iter().position(inside),
                    timestamps.iter().rposition(inside),
                ) {
                    windows.push((first, last));
                }
            }
            series.push(Series {
                name: name.clone(),
                timestamps,
                values,
                windows,
            });
        }
        Ok(Corpus { series, profiles })
    }

    /// The number of labelled windows in the corpus.
    pub fn windows(&self) -> usize {
        self.series.iter().map(|s| s.windows.len()).sum()
    }
}

fn read(path: &Path) -> Result<String, NabError> {
    std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_owned(),
        source,
    })
}

fn malformed(path: &Path, line: usize, message: impl std::fmt::Display) -> NabError {
    NabError::Malformed {
        path: path.to_owned(),
        line,
        message: message.to_string(),
    }
}

fn parse_profiles(path: &Path, text: &str) -> Result<Vec<Profile>, NabError> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| malformed(path, 0, e))?;
    let mut profiles = Vec::new();
    for name in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        let costs = &json[name]["CostMatrix"];
        let weight = |field: &str| {
            costs[field]
                .as_f64()
                .ok_or_else(|| malformed(path, 0, format!("{name}: no number {field}")))
        };
        profiles.push(Profile {
            name: name.to_string(),
            tp_weight: weight("tpWeight")?,
            fn_weight: weight("fnWeight")?,
            fp_weight: weight("fpWeight")?,
        });
    }
    Ok(profiles)
}

fn parse_csv(path: &Path, text: &str) -> Result<(Vec<i64>, Vec<f64>), NabError> {
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for (number, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (time, value) = line
            .split_once(',')
            .ok_or_else(|| malformed(path, number + 1, "expected `timestamp,value`"))?;
        let time = parse_time(time)
            .ok_or_else(|| malformed(path, number + 1, format!("bad timestamp {time:?}")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| malformed(path, number + 1, format!("bad value {value:?}")))?;
        timestamps.push(time);
        values.push(value);
    }
    Ok((timestamps, values))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` as seconds since the Unix epoch (UTC; fractions dropped).
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once(' ')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let time = time.split('.').next()?;
    let mut time = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
