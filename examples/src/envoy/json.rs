//! The `/json` form of `ShouldRateLimit`, as envoyproxy/ratelimit serves it on its HTTP port:
//! a `RateLimitRequest` in protobuf's JSON mapping in, the `RateLimitResponse` in the same
//! mapping out (`200` for `OK`, `429` for `OVER_LIMIT`, `400` for a body that is not a request).
//!
//! ```sh
//! curl -d '{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.1"}]}]}' \
//!   http://127.0.0.1:8080/json
//! ```
//!
//! The mapping is protobuf's (`protojson`): field names in camelCase or as in the `.proto`,
//! 64-bit integers as numbers or strings, enums by name or number, durations as `"1.5s"`,
//! default values left out of the response. Unknown fields are refused, as `protojson` does.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry as PbEntry, RateLimitOverride,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, Struct as PbStruct, UInt64Value, Value,
};
use serde_json::{Map, Value as Json, json};
use thiserror::Error;

/// Why a body is not a `RateLimitRequest`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    Syntax(String),
    /// JSON, but a field of the wrong type or name.
    #[error("{field}: {message}")]
    Field {
        /// Where, as a path (`descriptors[0].entries[1].key`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn field_error(field: &str, message: impl Into<String>) -> JsonError {
    JsonError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A JSON object's fields, each read once by either of its two names.
struct Object<'a> {
    path: String,
    fields: &'a Map<String, Json>,
    seen: Vec<&'a str>,
}

impl<'a> Object<'a> {
    fn new(path: String, value: &'a Json) -> Result<Self, JsonError> {
        match value {
            Json::Object(fields) => Ok(Object {
                path,
                fields,
                seen: Vec::new(),
            }),
            _ => Err(field_error(&path, "expected an object")),
        }
    }

    /// The field named `camel` or `snake`, if present and not `null`.
    fn get(&mut self, camel: &'static str, snake: &'static str) -> Option<&'a Json> {
        self.seen.push(camel);
        self.seen.push(snake);
        self.fields
            .get(camel)
            .or_else(|| self.fields.get(snake))
            .filter(|v| !v.is_null())
    }

    fn at(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Refuses fields that were not asked for.
    fn finish(self) -> Result<(), JsonError> {
        match self
            .fields
            .keys()
            .find(|k| !self.seen.contains(&k.as_str()))
        {
            Some(unknown) => Err(field_error(&self.at(unknown), "unknown field")),
            None => Ok(()),
        }
    }
}

fn string(path: &str, value: &Json) -> Result<String, JsonError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| field_error(path, "expected a string"))
}

/// An unsigned integer as protojson reads it: a number, or a string of digits.
fn unsigned(path: &str, value: &Json, max: u64) -> Result<u64, JsonError> {
    let parsed = match value {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    };
    parsed
        .filter(|&n| n <= max)
        .ok_or_else(|| field_error(path, format!("expected an integer from 0 to {max}")))
}

fn array<'a>(path: &str, value: &'a Json) -> Result<&'a Vec<Json>, JsonError> {
    value
        .as_array()
        .ok_or_else(|| field_error(path, "expected an array"))
}

/// Parses a `RateLimitRequest` from its JSON mapping.
pub fn request_from_json(body: &[u8]) -> Result<RateLimitRequest, JsonError> {
    let value: Json = serde_json::from_slice(body).map_err(|e| JsonError::Syntax(e.to_string()))?;
    let mut object = Object::new(String::new(), &value)?;
    let mut request = RateLimitRequest::default();
    if let Some(domain) = object.get("domain", "domain") {
        request.domain = string("domain", domain)?;
    }
    if let Some(hits) = object.get("hitsAddend", "hits_addend") {
        let hits = unsigned("hitsAddend", hits, u64::from(u32::MAX))?;
        request.hits_addend = u32::try_from(hits).unwrap_or(u32::MAX);
    }
    if let Some(descriptors) = object.get("descriptors", "descriptors") {
        for (index, descriptor) in array("descriptors", descriptors)?.iter().enumerate() {
            request.descriptors.push(descriptor_from_json(
                &format!("descriptors[{index}]"),
                descriptor,
            )?);
        }
    }
    object.finish()?;
    Ok(request)
}

fn descriptor_from_json(path: &str, value: &Json) -> Result<RateLimitDescriptor, JsonError> {
    let mut object = Object::new(path.to_string(), value)?;
    let mut descriptor = RateLimitDescriptor::default();
    if let Some(entries) = object.get("entries", "entries") {
        let at = object.at("entries");
        for (index, entry) in array(&at, entries)?.iter().enumerate() {
            let here = format!("{at}[{index}]");
            let mut fields = Object::new(here, entry)?;
            let key = fields.get("key", "key");
            let value = fields.get("value", "value");
            let key = key.map(|k| string(&fields.at("key"), k)).transpose()?;
            let value = value.map(|v| string(&fields.at("value"), v)).transpose()?;
            fields.finish()?;
            descriptor.entries.push(PbEntry {
                key: key.unwrap_or_default(),
                value: value.unwrap_or_default(),
            });
        }
    }
    if let Some(limit) = object.get("limit", "limit") {
        let mut fields = Object::new(object.at("limit"), limit)?;
        let mut own = RateLimitOverride::default();
        if let Some(count) = fields.get("requestsPerUnit", "requests_per_unit") {
            let count = unsigned(&fields.at("requestsPerUnit"), count, u64::from(u32::MAX))?;
            own.requests_per_unit = u32::try_from(count).unwrap_or(u32::MAX);
        }
        if let Some(unit) = fields.get("unit", "unit") {
            own.unit = unit_from_json(&fields.at("unit"), unit)?;
        }
        fields.finish()?;
        descriptor.limit = Some(own);
    }
    if let Some(hits) = object.get("hitsAddend", "hits_addend") {
        // A `google.protobuf.UInt64Value`: its JSON form is the bare number.
        descriptor.hits_addend = Some(UInt64Value {
            value: unsigned(&object.at("hitsAddend"), hits, u64::MAX)?,
        });
    }
    object.finish()?;
    Ok(descriptor)
}

fn unit_from_json(path: &str, value: &Json) -> Result<i32, JsonError> {
    match value {
        Json::String(name) => PbUnit::from_str_name(name)
            .map(|u| u as i32)
            .ok_or_else(|| field_error(path, format!("unknown unit {name:?}"))),
        Json::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| field_error(path, "expected a unit")),
        _ => Err(field_error(path, "expected a unit")),
    }
}

/// A `RateLimitResponse` in its JSON mapping (default values left out, as protojson does).
pub fn response_to_json(response: &RateLimitResponse) -> Json {
    let mut out = Map::new();
    out.insert(
        "overallCode".into(),
        json!(code_name(response.overall_code)),
    );
    if !response.statuses.is_empty() {
        let statuses: Vec<Json> = response.statuses.iter().map(status_to_json).collect();
        out.insert("statuses".into(), Json::Array(statuses));
    }
    if !response.response_headers_to_add.is_empty() {
        let headers: Vec<Json> = response
            .response_headers_to_add
            .iter()
            .map(|h| json!({"key": h.key, "value": h.value}))
            .collect();
        out.insert("responseHeadersToAdd".into(), Json::Array(headers));
    }
    if let Some(metadata) = &response.dynamic_metadata {
        out.insert("dynamicMetadata".into(), struct_to_json(metadata));
    }
    Json::Object(out)
}

fn code_name(code: i32) -> &'static str {
    Code::try_from(code).map_or("UNKNOWN", |c| c.as_str_name())
}

fn status_to_json(status: &DescriptorStatus) -> Json {
    let mut out = Map::new();
    out.insert("code".into(), json!(code_name(status.code)));
    if let Some(limit) = &status.current_limit {
        let mut current = Map::new();
        if !limit.name.is_empty() {
            current.insert("name".into(), json!(limit.name));
        }
        if limit.requests_per_unit != 0 {
            current.insert("requestsPerUnit".into(), json!(limit.requests_per_unit));
        }
        let unit = PbUnit::try_from(limit.unit).map_or("UNKNOWN", |u| u.as_str_name());
        current.insert("unit".into(), json!(unit));
        out.insert("currentLimit".into(), Json::Object(current));
    }
    if status.limit_remaining != 0 {
        out.insert("limitRemaining".into(), json!(status.limit_remaining));
    }
    if let Some(reset) = &status.duration_until_reset {
        out.insert("durationUntilReset".into(), json!(duration_to_json(reset)));
    }
    Json::Object(out)
}

/// A duration as protojson writes it: seconds, with 0, 3, 6 or 9 fractional digits.
fn duration_to_json(duration: &PbDuration) -> String {
    let nanos = duration.nanos.unsigned_abs();
    let seconds = duration.seconds;
    if nanos == 0 {
        format!("{seconds}s")
    } else if nanos % 1_000_000 == 0 {
        format!("{seconds}.{:03}s", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{seconds}.{:06}s", nanos / 1_000)
    } else {
        format!("{seconds}.{nanos:09}s")
    }
}

fn struct_to_json(value: &PbStruct) -> Json {
    Json::Object(
        value
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(value_to_json).collect()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_both_names_and_string_integers() {
        let request = request_from_json(
            br#"{"domain":"edge","hits_addend":"3","descriptors":[
                {"entries":[{"key":"k","value":"v"}],"hitsAddend":0,
                 "limit":{"requests_per_unit":5,"unit":"MINUTE"}}]}"#,
        )
        .unwrap();
        assert_eq!(request.domain, "edge");
        assert_eq!(request.hits_addend, 3);
        let descriptor = &request.descriptors[0];
        assert_eq!(
            (
                descriptor.entries[0].key.as_str(),
                descriptor.entries[0].value.as_str()
            ),
            ("k", "v")
        );
        assert_eq!(descriptor.hits_addend, Some(UInt64Value { value: 0 }));
        let limit = descriptor.limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, limit.unit),
            (5, PbUnit::Minute as i32)
        );
    }

    #[test]
    fn a_bad_request_is_refused_with_its_field() {
        for (body, field) in [
            (&br#"{"domain":1}"#[..], "domain"),
            (br#"{"domian":"x"}"#, "domian"),
            (
                br#"{"descriptors":[{"entries":[{"key":"k","vale":"v"}]}]}"#,
                "descriptors[0].entries[0].vale",
            ),
            (
                br#"{"descriptors":[{"limit":{"unit":"FORTNIGHT"}}]}"#,
                "descriptors[0].limit.unit",
            ),
            (br#"{"hitsAddend":-1}"#, "hitsAddend"),
            (br#"{"hitsAddend":4294967296}"#, "hitsAddend"),
            (br#"{"descriptors":{}}"#, "descriptors"),
        ] {
            match request_from_json(body) {
                Err(JsonError::Field { field: at, .. }) => assert_eq!(at, field),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        assert!(matches!(
            request_from_json(b"{not json"),
            Err(JsonError::Syntax(_))
        ));
    }

    #[test]
    fn a_response_is_written_as_protojson_writes_it() {
        let response = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![DescriptorStatus {
                code: Code::OverLimit as i32,
                current_limit: Some(
                    envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::RateLimit {
                        name: String::new(),
                        requests_per_unit: 10,
                        unit: PbUnit::Second as i32,
                    },
                ),
                limit_remaining: 0,
                duration_until_reset: Some(PbDuration {
                    seconds: 1,
                    nanos: 500_000_000,
                }),
                ..DescriptorStatus::default()
            }],
            ..RateLimitResponse::default()
        };
        assert_eq!(
            response_to_json(&response),
            json!({"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT",
                "currentLimit":{"requestsPerUnit":10,"unit":"SECOND"},
                "durationUntilReset":"1.500s"}]})
        );
    }
}
