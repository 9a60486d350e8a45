//! A descriptor's `rate_limit`: its unit, its count, and the names it replaces.
//!
//! Apart from the tree because this is the one part with its own deserialisation rules (a unit in
//! any letter case, `unlimited` against a count) and the one that becomes a store's policy.

use std::time::Duration;

use ratelimit_core::{Policy, PolicyError};
use serde::Deserialize;

/// The unit of a `rate_limit`, in any letter case (`second`, `SECOND`, `Second`), as
/// envoyproxy/ratelimit reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A second.
    Second,
    /// A minute.
    Minute,
    /// An hour.
    Hour,
    /// A day.
    Day,
    /// A week.
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than `try_from = "String"`: an error raised while the field itself
        // is read keeps the field's path (`descriptors[0].rate_limit.unit`) in the message.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Unit;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a unit: second, minute, hour, day, week, month or year")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Unit, E> {
                Unit::from_name(name).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl Unit {
    /// The unit named `name`, in any letter case.
    pub fn from_name(name: &str) -> Result<Self, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "year" => Unit::Year,
            _ => {
                return Err(format!(
                    "unknown unit {name:?}, expected second, minute, hour, day, week, month or year"
                ));
            }
        })
    }

    /// The unit's name as Envoy's API spells it (`SECOND`).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Week => "WEEK",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }

    /// The unit's length.
    pub fn duration(self) -> Duration {
        let seconds = match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        };
        Duration::from_secs(seconds)
    }
}

/// A descriptor's limit: a count per unit, or none at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRateLimit")]
pub struct RateLimit {
    /// Requests admitted per unit (0 when unlimited). Zero with a unit admits nothing: every
    /// request for the descriptor is `OVER_LIMIT`, as envoyproxy/ratelimit answers it (a block
    /// list entry).
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
    /// Never limited (still counted).
    pub unlimited: bool,
    /// The limit's name, reported in responses and named by other limits' `replaces`.
    pub name: Option<String>,
    /// Names of limits this one replaces: when both match descriptors of one request, those
    /// limits are not applied to that request (neither checked nor debited).
    pub replaces: Vec<String>,
}

impl RateLimit {
    /// The GCRA policy of this limit: `requests_per_unit` per unit, all of it available at once
    /// (the burst is the count, as a fixed window would allow). An error for a limit of zero,
    /// which admits nothing and has no policy (see [`admits_nothing`](Self::admits_nothing)).
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        Policy::new(self.requests_per_unit, self.unit.duration())
    }

    /// `requests_per_unit: 0`: every request is over the limit, and no store is asked.
    pub fn admits_nothing(&self) -> bool {
        !self.unlimited && self.requests_per_unit == 0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    unit: Option<Unit>,
    requests_per_unit: Option<u32>,
    #[serde(default)]
    unlimited: bool,
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<RawReplace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplace {
    name: String,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = String;

    fn try_from(raw: RawRateLimit) -> Result<Self, String> {
        let mut replaces = Vec::with_capacity(raw.replaces.len());
        for replace in raw.replaces {
            // envoyproxy/ratelimit refuses both: an empty name replaces nothing, and a limit
            // replacing itself would never apply.
            if replace.name.is_empty() {
                return Err("rate_limit.replaces: a name must not be empty".into());
            }
            if raw.name.as_deref() == Some(replace.name.as_str()) {
                return Err(format!(
                    "rate_limit.replaces: {:?} is this limit's own name",
                    replace.name
                ));
            }
            replaces.push(replace.name);
        }
        if raw.unlimited {
            if raw.requests_per_unit.is_some() {
                return Err(
                    "rate_limit.requests_per_unit: not allowed with `unlimited: true`".into(),
                );
            }
            return Ok(RateLimit {
                requests_per_unit: 0,
                unit: raw.unit.unwrap_or(Unit::Second),
                unlimited: true,
                name: raw.name,
                replaces,
            });
        }
        let unit = raw
            .unit
            .ok_or("rate_limit.unit: missing (or `unlimited: true`)")?;
        let requests_per_unit = raw
            .requests_per_unit
            .ok_or("rate_limit.requests_per_unit: missing")?;
        Ok(RateLimit {
            requests_per_unit,
            unit,
            unlimited: false,
            name: raw.name,
            replaces,
        })
    }
}
