//! What clients see: 429 or RESOURCE_EXHAUSTED, and the rate-limit header fields.
//!
//! The IETF fields follow draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists each
//! limit as `"name";q=<quota>;w=<window seconds>` and `RateLimit` its state as
//! `"name";r=<remaining>;t=<seconds until reset>`, both Structured Field lists (RFC 9651), written
//! by the `sfv` crate.
//! For a GCRA limit the quota is its burst and the window the time an empty bucket takes to fill.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use ratelimit_core::{Decision, Policy};
use sfv::{Integer, KeyRef, ListSerializer, StringRef};

/// Which rate-limit header fields responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderOptions {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers). Default on.
    pub ietf: bool,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`. Default off.
    pub x_ratelimit: bool,
    /// Also on admitted responses, not only on rejections. Default off.
    pub on_success: bool,
}

impl Default for HeaderOptions {
    fn default() -> Self {
        HeaderOptions {
            ietf: true,
            x_ratelimit: false,
            on_success: false,
        }
    }
}

/// One limit's part in the header fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitState<'a> {
    pub(crate) rule: &'a str,
    pub(crate) policy: Policy,
    pub(crate) decision: Decision,
}

/// What a rejection is about, for a custom rejection response.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The rule that denied (the one asking for the longest wait).
    pub rule: String,
    /// How long until the request would be admitted.
    pub retry_after: Duration,
    /// Whether the request was gRPC.
    pub grpc: bool,
}

/// Builds a custom rejection response.
pub type RejectionFn = Arc<dyn Fn(&Rejection) -> Response<Bytes> + Send + Sync>;

/// Whole seconds, rounded up, so a client that waits them is never early; at least 1 when denied.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Writes the rate-limit header fields for `limits` into `headers`.
pub(crate) fn write_headers(
    headers: &mut HeaderMap,
    options: &HeaderOptions,
    limits: &[LimitState<'_>],
) {
    let Some(tightest) = limits.iter().min_by_key(|l| l.decision.remaining()) else {
        return;
    };
    if options.ietf {
        // Both fields are RFC 9651 lists; sfv writes them, escaping and all. Rule names are
        // checked to be header-safe when the layer is built, so none is skipped in practice.
        let mut policies = ListSerializer::new();
        let mut states = ListSerializer::new();
        for limit in limits {
            let Ok(rule) = StringRef::from_str(limit.rule) else {
                continue;
            };
            let window = ceil_secs(Duration::from_nanos(limit.policy.tolerance_ns())).max(1);
            _ = policies
                .bare_item(rule)
                .parameter(QUOTA, limit.policy.burst())
                .parameter(WINDOW, sf_integer(window));
            _ = states
                .bare_item(rule)
                .parameter(REMAINING, limit.decision.remaining())
                .parameter(RESET, sf_integer(ceil_secs(limit.decision.reset_after())));
        }
        if let Some(policies) = policies.finish() {
            insert(headers, &RATELIMIT_POLICY, policies);
        }
        if let Some(states) = states.finish() {
            insert(headers, &RATELIMIT, states);
        }
    }
    if options.x_ratelimit {
        insert(headers, &X_LIMIT, tightest.decision.limit().to_string());
        insert(
            headers,
            &X_REMAINING,
            tightest.decision.remaining().to_string(),
        );
        insert(
            headers,
            &X_RESET,
            ceil_secs(tightest.decision.reset_after()).to_string(),
        );
    }
}

const QUOTA: &KeyRef = KeyRef::constant("q");
const WINDOW: &KeyRef = KeyRef::constant("w");
const REMAINING: &KeyRef = KeyRef::constant("r");
const RESET: &KeyRef = KeyRef::constant("t");

/// Seconds as a Structured Field integer, which holds fifteen digits: longer is saturated.
fn sf_integer(seconds: u64) -> Integer {
    Integer::try_from(seconds).unwrap_or(Integer::MAX)
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: String) {
    // Rule names are checked to be header-safe when the layer is built, so this always succeeds.
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name.clone(), value);
    }
}

/// The default rejection: HTTP 429 with `Retry-After`, or gRPC `RESOURCE_EXHAUSTED` carrying the
/// delay as `google.rpc.RetryInfo` in its details and as `retry-after` metadata.
pub(crate) fn reject(rejection: &Rejection) -> Response<Bytes> {
    let seconds = ceil_secs(rejection.retry_after).max(1);
    let mut response = if rejection.grpc {
        grpc_rejection(rejection)
    } else {
        let mut response = Response::new(Bytes::from(format!(
            "Too Many Requests: limit {:?} exceeded, retry in {seconds} s\n",
            rejection.rule
        )));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(feature = "tonic")]
fn grpc_rejection(rejection: &Rejection) -> Response<Bytes> {
    use tonic_types::{ErrorDetails, StatusExt};
    let status = tonic::Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!("rate limit {:?} exceeded", rejection.rule),
        ErrorDetails::with_retry_info(Some(rejection.retry_after)),
    );
    let (parts, ()) = status.into_http::<()>().into_parts();
    Response::from_parts(parts, Bytes::new())
}

#[cfg(not(feature = "tonic"))]
fn grpc_rejection(rejection: &Rejection) -> Response<Bytes> {
    // Without tonic: a trailers-only response with the status in headers (code 8).
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static("8"));
    if let Ok(message) = HeaderValue::from_str(&format!("rate limit {} exceeded", rejection.rule)) {
        headers.insert("grpc-message", message);
    }
    response
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use sfv::{BareItem, ListEntry, Parser};

    fn state<'a>(rule: &'a str, burst: u32, remaining: u32, reset: Duration) -> LimitState<'a> {
        let policy = Policy::per_minute(burst).unwrap_or_else(|e| panic!("{e}"));
        LimitState {
            rule,
            policy,
            decision: Decision::new(true, burst, remaining, Duration::ZERO, reset),
        }
    }

    /// Each member's string and integer parameters, as a client's RFC 9651 parser reads them.
    fn parsed(headers: &HeaderMap, name: &HeaderName) -> Vec<(String, Vec<(String, i64)>)> {
        let value = headers[name].to_str().unwrap_or_default();
        let list = Parser::new(value)
            .parse::<sfv::List>()
            .unwrap_or_else(|e| panic!("{value:?}: {e}"));
        list.into_iter()
            .filter_map(|entry| match entry {
                ListEntry::Item(item) => Some(item),
                ListEntry::InnerList(_) => None,
            })
            .map(|item| {
                let name = match item.bare_item {
                    BareItem::String(name) => name.as_str().to_string(),
                    other => panic!("member is not a string: {other:?}"),
                };
                let params = item
                    .params
                    .into_iter()
                    .map(|(key, value)| match value {
                        BareItem::Integer(i) => (key.as_str().to_string(), i64::from(i)),
                        other => panic!("parameter {key:?} is not an integer: {other:?}"),
                    })
                    .collect();
                (name, params)
            })
            .collect()
    }

    #[test]
    fn both_fields_parse_as_lists_with_every_limit_in_order() {
        let mut headers = HeaderMap::new();
        let limits = [
            state("per-ip", 60, 7, Duration::from_millis(2_500)),
            state("global", 600, 599, Duration::from_millis(100)),
        ];
        write_headers(&mut headers, &HeaderOptions::default(), &limits);
        let pair = |k: &str, v: i64| (k.to_string(), v);
        assert_eq!(
            parsed(&headers, &RATELIMIT_POLICY),
            vec![
                ("per-ip".into(), vec![pair("q", 60), pair("w", 60)]),
                ("global".into(), vec![pair("q", 600), pair("w", 60)]),
            ]
        );
        assert_eq!(
            parsed(&headers, &RATELIMIT),
            vec![
                ("per-ip".into(), vec![pair("r", 7), pair("t", 3)]),
                ("global".into(), vec![pair("r", 599), pair("t", 1)]),
            ]
        );
    }

    #[test]
    fn quotes_and_backslashes_in_a_rule_name_are_escaped_and_read_back() {
        let mut headers = HeaderMap::new();
        let limits = [state(r#"say "hi" \ wave"#, 5, 1, Duration::from_secs(1))];
        write_headers(&mut headers, &HeaderOptions::default(), &limits);
        assert_eq!(
            headers[&RATELIMIT].to_str().ok(),
            Some(r#""say \"hi\" \\ wave";r=1;t=1"#)
        );
        assert_eq!(parsed(&headers, &RATELIMIT)[0].0, r#"say "hi" \ wave"#);
    }

    #[test]
    fn a_reset_past_fifteen_digits_is_saturated_not_dropped() {
        assert_eq!(sf_integer(u64::MAX), Integer::MAX);
        assert_eq!(i64::from(sf_integer(42)), 42);
    }
}
