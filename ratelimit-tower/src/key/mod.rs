//! Who a request is: the key a rule counts it under.
//!
//! The request as extractors see it and the error are in this file; the extractors in
//! `extractor.rs`, trusted proxies and forwarding headers in `proxies.rs`, and the writing of keys
//! into a store key in `write.rs`.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use http::{Extensions, Method, Uri};

mod extractor;
mod proxies;
mod write;

pub use extractor::{CustomExtractor, KeyExtractor};
pub use proxies::{ForwardedHeader, IpPrefixes, TrustedProxies};

/// The peer address of a connection, for servers other than axum and tonic (say a bare hyper
/// server): insert it into each request's extensions and [`KeyExtractor::PeerIp`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The authenticated caller, put into request extensions by an authentication layer that runs
/// before this one; [`KeyExtractor::Principal`] counts requests by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(pub String);

/// What a key extractor sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request URI.
    pub uri: &'a Uri,
    /// The request headers (gRPC metadata included).
    pub headers: &'a HeaderMap,
    /// The request extensions.
    pub extensions: &'a Extensions,
}

impl<'a> RequestView<'a> {
    /// The view of a request.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        RequestView {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The address of the connection's peer, from axum's `ConnectInfo`, tonic's `TcpConnectInfo`
    /// or a [`PeerAddr`] extension. An IPv4 client of a server bound to `[::]` comes as
    /// `::ffff:a.b.c.d`; it is given back as the IPv4 address it is (else every IPv4 client would
    /// share one /64, and no IPv4 proxy range would match).
    pub fn peer(&self) -> Option<IpAddr> {
        self.raw_peer().map(|ip| ip.to_canonical())
    }

    fn raw_peer(&self) -> Option<IpAddr> {
        #[cfg(feature = "axum")]
        if let Some(info) = self
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(info.0.ip());
        }
        #[cfg(feature = "tonic")]
        if let Some(info) = self
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
        {
            return info.remote_addr().map(|a| a.ip());
        }
        self.extensions.get::<PeerAddr>().map(|p| p.0.ip())
    }

    /// The request host: the URI's authority (HTTP/2) or the `Host` header (HTTP/1.1).
    pub fn host(&self) -> Option<&'a str> {
        self.uri.host().or_else(|| {
            self.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h))
        })
    }
}

/// Why a key could not be extracted from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The connection's peer address is unknown (the server does not record it).
    #[error("the peer address is unknown; serve with connect info or insert a PeerAddr")]
    NoPeer,
    /// The header that carries the key is absent.
    #[error("the request has no {0} header")]
    MissingHeader(HeaderName),
    /// No authentication layer put a [`Principal`] in the request.
    #[error("the request carries no authenticated principal")]
    NoPrincipal,
    /// A custom extractor found nothing.
    #[error("the custom key extractor found no key")]
    NotFound,
}

#[cfg(test)]
mod tests;
