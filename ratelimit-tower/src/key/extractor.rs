//! The key extractors: what part of a request a rule counts it under.
//!
//! Apart from the proxies because most extractors read one field of the request; only the client's
//! address needs the chain of forwarding headers.

use std::sync::Arc;

use compact_str::CompactString;
use http::header::HeaderName;

use super::write::{push_bounded, push_network};
use super::{IpPrefixes, KeyError, Principal, RequestView, TrustedProxies};

/// A function that extracts a key from a request.
pub type CustomExtractor = Arc<dyn Fn(&RequestView<'_>) -> Option<String> + Send + Sync>;

/// How a rule finds the key it counts a request under.
#[derive(Clone)]
pub enum KeyExtractor {
    /// The connection's peer IP (IPv6 peers by their /64). Behind a proxy this is the proxy; see
    /// [`ClientIp`](Self::ClientIp), which with [`TrustedProxies::none`] is the peer under
    /// prefixes of your choice.
    PeerIp,
    /// The client's IP behind the given trusted proxies.
    ///
    /// The forwarding header the operator names ([`ForwardedHeader`](super::ForwardedHeader), `X-Forwarded-For` unless set)
    /// counts only when the peer itself is a trusted proxy, and no other forwarding header is ever
    /// read. The client is then the rightmost address in it that is not a trusted proxy: every
    /// address left of it was written by the client or an untrusted hop and could be anything.
    /// Clients are keyed by network ([`IpPrefixes`]: IPv6 by /64 unless set otherwise).
    ClientIp(TrustedProxies),
    /// The value of a header (an API key, a tenant id, gRPC metadata).
    Header(HeaderName),
    /// The [`Principal`] an authentication layer put in the request's extensions.
    Principal,
    /// The request path (for gRPC, `/package.Service/Method`).
    Route,
    /// One key for every request: a global limit.
    Global,
    /// Any function of the request.
    Custom(CustomExtractor),
}

impl std::fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyExtractor::PeerIp => f.write_str("PeerIp"),
            KeyExtractor::ClientIp(t) => f.debug_tuple("ClientIp").field(t).finish(),
            KeyExtractor::Header(h) => f.debug_tuple("Header").field(h).finish(),
            KeyExtractor::Principal => f.write_str("Principal"),
            KeyExtractor::Route => f.write_str("Route"),
            KeyExtractor::Global => f.write_str("Global"),
            KeyExtractor::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl KeyExtractor {
    /// A key from any function of the request.
    pub fn custom(f: impl Fn(&RequestView<'_>) -> Option<String> + Send + Sync + 'static) -> Self {
        KeyExtractor::Custom(Arc::new(f))
    }

    /// A key from a header (or gRPC metadata entry).
    pub fn header(name: HeaderName) -> Self {
        KeyExtractor::Header(name)
    }

    /// The key of `request`, or why there is none.
    pub fn extract(&self, request: &RequestView<'_>) -> Result<String, KeyError> {
        let mut key = CompactString::default();
        self.extract_into(request, &mut key)?;
        Ok(key.into_string())
    }

    /// Appends the key of `request` to `out` (which the layer has started with the rule's name), so
    /// that a key costs one allocation; on error `out` is left as it was.
    pub fn extract_into(
        &self,
        request: &RequestView<'_>,
        out: &mut CompactString,
    ) -> Result<(), KeyError> {
        let start = out.len();
        match self {
            KeyExtractor::PeerIp => {
                let peer = request.peer().ok_or(KeyError::NoPeer)?;
                push_network(out, peer, IpPrefixes::default().of(&peer));
            }
            KeyExtractor::ClientIp(trusted) => trusted.push_key(out, trusted.client_ip(request)?),
            KeyExtractor::Header(name) => {
                let value = request
                    .headers
                    .get(name)
                    .ok_or_else(|| KeyError::MissingHeader(name.clone()))?;
                if value.is_empty() {
                    return Err(KeyError::MissingHeader(name.clone()));
                }
                match value.to_str() {
                    Ok(text) => push_bounded(out, text),
                    // Bytes past ASCII are still a key of their own: hashed, never merged with
                    // another value and never an error that lands in a shared bucket.
                    Err(_) => out.push_str(&ratelimit_core::key::hashed(value.as_bytes())),
                }
            }
            KeyExtractor::Principal => {
                let principal = request
                    .extensions
                    .get::<Principal>()
                    .ok_or(KeyError::NoPrincipal)?;
                push_bounded(out, &principal.0);
            }
            KeyExtractor::Route => push_bounded(out, request.uri.path()),
            KeyExtractor::Global => out.push('*'),
            KeyExtractor::Custom(f) => {
                let key = f(request).ok_or(KeyError::NotFound)?;
                push_bounded(out, &key);
            }
        }
        if out.len() == start {
            return Err(KeyError::NotFound);
        }
        Ok(())
    }
}
