//! What clients see: 429 or RESOURCE_EXHAUSTED, and the rate-limit header fields.
//!
//! The IETF fields follow draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists each
//! limit as `"name";q=<quota>;w=<window seconds>` and `RateLimit` its state as
//! `"name";r=<remaining>;t=<seconds until reset>`, both Structured Field lists (RFC 9651).
//! For a GCRA limit the quota is its burst and the window the time an empty bucket takes to fill.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use ratelimit_core::{Decision, Policy};

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
        let policies: Vec<String> = limits
            .iter()
            .map(|l| {
                let window = ceil_secs(Duration::from_nanos(l.policy.tolerance_ns())).max(1);
                format!("\"{}\";q={};w={window}", l.rule, l.policy.burst())
            })
            .collect();
        let states: Vec<String> = limits
            .iter()
            .map(|l| {
                format!(
                    "\"{}\";r={};t={}",
                    l.rule,
                    l.decision.remaining(),
                    ceil_secs(l.decision.reset_after())
                )
            })
            .collect();
        insert(headers, &RATELIMIT_POLICY, policies.join(", "));
        insert(headers, &RATELIMIT, states.join(", "));
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
