//! Who a request is: the key a rule counts it under.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use compact_str::CompactString;
use http::header::{HeaderMap, HeaderName};
use http::{Extensions, Method, Uri};
use ipnet::IpNet;

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
    /// or a [`PeerAddr`] extension.
    pub fn peer(&self) -> Option<IpAddr> {
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
    /// A header is present but not what its syntax says.
    #[error("malformed {header} header: {reason}")]
    Malformed {
        /// The header.
        header: HeaderName,
        /// What is wrong with it.
        reason: String,
    },
    /// No authentication layer put a [`Principal`] in the request.
    #[error("the request carries no authenticated principal")]
    NoPrincipal,
    /// The extracted key is longer than a store accepts.
    #[error("the extracted key is {0} bytes long, more than a store accepts")]
    TooLong(usize),
    /// A custom extractor found nothing.
    #[error("the custom key extractor found no key")]
    NotFound,
}

/// A function that extracts a key from a request.
pub type CustomExtractor = Arc<dyn Fn(&RequestView<'_>) -> Option<String> + Send + Sync>;

/// How a rule finds the key it counts a request under.
#[derive(Clone)]
pub enum KeyExtractor {
    /// The connection's peer IP. Behind a proxy this is the proxy; see [`ClientIp`](Self::ClientIp).
    PeerIp,
    /// The client's IP behind the given trusted proxies.
    ///
    /// Forwarding headers count only when the peer itself is a trusted proxy. Then the client is the
    /// rightmost address in `Forwarded` (or, without it, `X-Forwarded-For`) that is not a trusted
    /// proxy: every address left of it was written by the client or an untrusted hop and could be
    /// anything. `X-Real-IP` is read only when a trusted peer sends no list.
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
            KeyExtractor::PeerIp => push_ip(out, request.peer().ok_or(KeyError::NoPeer)?),
            KeyExtractor::ClientIp(trusted) => push_ip(out, trusted.client_ip(request)?),
            KeyExtractor::Header(name) => {
                let value = request
                    .headers
                    .get(name)
                    .ok_or_else(|| KeyError::MissingHeader(name.clone()))?;
                let value = value.to_str().map_err(|_| KeyError::Malformed {
                    header: name.clone(),
                    reason: "not visible ASCII".into(),
                })?;
                if value.is_empty() {
                    return Err(KeyError::MissingHeader(name.clone()));
                }
                check_length(value.len())?;
                out.push_str(value);
            }
            KeyExtractor::Principal => {
                let principal = request
                    .extensions
                    .get::<Principal>()
                    .ok_or(KeyError::NoPrincipal)?;
                check_length(principal.0.len())?;
                out.push_str(&principal.0);
            }
            KeyExtractor::Route => {
                check_length(request.uri.path().len())?;
                out.push_str(request.uri.path());
            }
            KeyExtractor::Global => out.push('*'),
            KeyExtractor::Custom(f) => {
                let key = f(request).ok_or(KeyError::NotFound)?;
                check_length(key.len())?;
                out.push_str(&key);
            }
        }
        if out.len() == start {
            return Err(KeyError::NotFound);
        }
        Ok(())
    }
}

/// Appends `ip` in its usual text form. IPv4 skips the formatting machinery: it is on the path of
/// every request keyed by address, and `Display` costs about as much as the rest of the key.
fn push_ip(out: &mut CompactString, ip: IpAddr) {
    use std::fmt::Write as _;
    match ip {
        IpAddr::V4(v4) => {
            // Written into a stack buffer and appended once: pushing character by character into
            // the key costs more than the digits.
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + (octet / 10) % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            // Only ASCII digits and dots were written, so this is always valid UTF-8.
            out.push_str(std::str::from_utf8(&buf[..len]).unwrap_or_default());
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Keys are at most half of what a store accepts, leaving room for the rule name in front.
fn check_length(len: usize) -> Result<(), KeyError> {
    if len > ratelimit_core::MAX_KEY_LEN / 2 {
        return Err(KeyError::TooLong(len));
    }
    Ok(())
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

static FORWARDED: HeaderName = http::header::FORWARDED;
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

impl TrustedProxies {
    /// No trusted proxy: the client is always the peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Proxies in these networks (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`).
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            networks: networks.into_iter().collect(),
        }
    }

    /// Proxies in networks given as text; a network that does not parse is an error.
    pub fn parse<'a>(
        networks: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ipnet::AddrParseError> {
        let networks = networks
            .into_iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|e| n.parse::<IpAddr>().map(IpNet::from).map_err(|_| e))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client's address; see [`KeyExtractor::ClientIp`].
    pub fn client_ip(&self, request: &RequestView<'_>) -> Result<IpAddr, KeyError> {
        let peer = request.peer().ok_or(KeyError::NoPeer)?;
        if !self.contains(&peer) {
            return Ok(peer);
        }
        let hops = if request.headers.contains_key(&FORWARDED) {
            forwarded_for(request.headers)?
        } else {
            x_forwarded_for(request.headers)?
        };
        if let Some(client) = hops.iter().rev().find(|ip| !self.contains(ip)) {
            return Ok(*client);
        }
        if let Some(first) = hops.first() {
            // Every hop is trusted: the leftmost is the client.
            return Ok(*first);
        }
        match request.headers.get(&X_REAL_IP) {
            Some(value) => parse_ip(&X_REAL_IP, value.to_str().unwrap_or("")),
            None => Ok(peer),
        }
    }
}

/// The addresses in `X-Forwarded-For`, left to right, over every instance of the header.
fn x_forwarded_for(headers: &HeaderMap) -> Result<Vec<IpAddr>, KeyError> {
    let mut hops = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let value = value
            .to_str()
            .map_err(|_| malformed(&X_FORWARDED_FOR, "not ASCII"))?;
        for hop in value.split(',') {
            hops.push(parse_ip(&X_FORWARDED_FOR, hop.trim())?);
        }
    }
    Ok(hops)
}

/// The `for=` addresses of RFC 7239 `Forwarded`, left to right, over every instance of the header.
fn forwarded_for(headers: &HeaderMap) -> Result<Vec<IpAddr>, KeyError> {
    let mut hops = Vec::new();
    for value in headers.get_all(&FORWARDED) {
        let value = value
            .to_str()
            .map_err(|_| malformed(&FORWARDED, "not ASCII"))?;
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then_some(value.trim())
            });
            let Some(node) = node else { continue };
            let node = node.trim_matches('"');
            // `[v6]:port`, `[v6]`, `v4:port` or `v4`; anything else (`unknown`, `_hidden`) is not
            // an address to count by.
            let host = match node.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(""),
                None => node.split(':').next().unwrap_or(""),
            };
            hops.push(parse_ip(&FORWARDED, host)?);
        }
    }
    Ok(hops)
}

fn parse_ip(header: &HeaderName, text: &str) -> Result<IpAddr, KeyError> {
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .map_err(|_| malformed(header, &format!("{text:?} is not an IP address")))
}

fn malformed(header: &HeaderName, reason: &str) -> KeyError {
    KeyError::Malformed {
        header: header.clone(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().uri("/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr("10.0.0.2:5000".parse().unwrap()));
        request
    }

    fn client(headers: &[(&str, &str)]) -> Result<IpAddr, KeyError> {
        let trusted = TrustedProxies::parse(["10.0.0.0/8", "fd00::/8"]).unwrap();
        let request = request(headers);
        trusted.client_ip(&RequestView::of(&request))
    }

    #[test]
    fn forwarded_takes_precedence_and_understands_every_node_form() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]),
            Ok(ip("192.0.2.60"))
        );
        assert_eq!(
            client(&[(
                "forwarded",
                r#"for="[2001:db8:cafe::17]:4711", for=10.1.1.1"#
            )]),
            Ok(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            client(&[
                ("forwarded", r#"For="192.0.2.43:47011""#),
                ("x-forwarded-for", "6.6.6.6")
            ]),
            Ok(ip("192.0.2.43"))
        );
        assert!(matches!(
            client(&[("forwarded", "for=unknown")]),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn x_forwarded_for_over_several_headers_and_all_trusted_hops() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client(&[
                ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
                ("x-forwarded-for", "10.9.9.9")
            ]),
            Ok(ip("8.8.8.8"))
        );
        assert_eq!(
            client(&[("x-forwarded-for", "10.1.1.1, fd00::1")]),
            Ok(ip("10.1.1.1"))
        );
        assert_eq!(client(&[("x-real-ip", "9.9.9.9")]), Ok(ip("9.9.9.9")));
        assert_eq!(client(&[]), Ok(ip("10.0.0.2")));
        assert!(client(&[("x-forwarded-for", "1.2.3.4, ")]).is_err());
    }

    #[test]
    fn ip_keys_are_written_as_display_writes_them() {
        for a in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            for b in [0u8, 7, 42, 250] {
                let ip = IpAddr::from([a, b, b.wrapping_mul(3), a.wrapping_add(b)]);
                let mut out = CompactString::from("rule:");
                push_ip(&mut out, ip);
                assert_eq!(out, format!("rule:{ip}"));
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut out = CompactString::default();
        push_ip(&mut out, v6);
        assert_eq!(out, "2001:db8::1");
    }

    #[test]
    fn oversized_keys_are_refused() {
        let long = "k".repeat(ratelimit_core::MAX_KEY_LEN);
        let request = request(&[("x-api-key", &long)]);
        let extractor = KeyExtractor::header(HeaderName::from_static("x-api-key"));
        assert!(matches!(
            extractor.extract(&RequestView::of(&request)),
            Err(KeyError::TooLong(_))
        ));
    }
}
