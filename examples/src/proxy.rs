//! Forwarding a request to an upstream and its response back: the body streamed both ways,
//! hop-by-hop headers dropped, `X-Forwarded-For` appended, and a timeout.
//!
//! The connection pool, HTTP framing and body streaming are hyper-util's; only the hop-by-hop
//! headers (RFC 9110's list and those `Connection` names) are handled here, in a dozen lines
//! tested below, rather than through a reverse-proxy crate for them alone.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// An HTTP client for upstreams (HTTP/1.1, pooled).
pub type HttpClient = Client<HttpConnector, Body>;

/// A pooled client for upstreams.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Headers that describe one connection, not the request: never forwarded (RFC 9110, 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    // Framing is the client's business: hyper sets it for the body it sends.
    headers.remove(header::TRANSFER_ENCODING);
}

/// Forwards `request` to `upstream` (`http://host:port`, its path prefixed to the request's),
/// waiting at most `timeout` for the response head. 502 when the upstream cannot be reached,
/// 504 when it does not answer in time.
pub async fn forward(
    client: &HttpClient,
    upstream: &str,
    mut request: Request<Body>,
    timeout: Duration,
) -> Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri: Uri = match format!("{}{path}", upstream.trim_end_matches('/')).parse() {
        Ok(uri) => uri,
        Err(_) => return status(StatusCode::BAD_GATEWAY, "bad upstream address"),
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    if let Some(peer) = peer {
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(before) => format!("{before}, {peer}"),
            None => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert("x-forwarded-for", value);
        }
    }
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, upstream, "upstream unreachable");
            status(StatusCode::BAD_GATEWAY, "upstream unreachable")
        }
        Err(_) => status(StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }
}
