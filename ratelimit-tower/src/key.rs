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
    /// The forwarding header the operator names ([`ForwardedHeader`], `X-Forwarded-For` unless set)
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

/// Appends a key taken from client data: itself when short, its SHA-256 when longer than a store
/// should hold (so a long value is a key of its own, never an error). See
/// [`ratelimit_core::key::bounded`].
fn push_bounded(out: &mut CompactString, key: &str) {
    out.push_str(&ratelimit_core::key::bounded(key));
}

/// The one forwarding header the operator's proxies set. Every other forwarding header is ignored:
/// a proxy that appends `X-Forwarded-For` passes a client's own `Forwarded` or `X-Real-IP` through
/// untouched, and believing it would let the client name any address it likes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`, appended to by every proxy (the default).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=...`, appended to by every proxy.
    Forwarded,
    /// A header of one address that the edge proxy sets, replacing what the client sent
    /// (`X-Real-IP`, `CF-Connecting-IP`, `True-Client-IP`).
    Single(HeaderName),
}

/// How much of an address is one client: IPv4 addresses one by one, IPv6 by /64 unless set
/// otherwise, because every home line and VM gets a whole /64 and would otherwise hold 2^64 keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefixes {
    v4: u8,
    v6: u8,
}

impl Default for IpPrefixes {
    fn default() -> Self {
        IpPrefixes { v4: 32, v6: 64 }
    }
}

impl IpPrefixes {
    /// Clients keyed by their IPv4 `/v4` and IPv6 `/v6` networks; a length past 32 or 128 is an
    /// error.
    pub fn new(v4: u8, v6: u8) -> Result<Self, ipnet::PrefixLenError> {
        ipnet::Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, v4)?;
        ipnet::Ipv6Net::new(std::net::Ipv6Addr::UNSPECIFIED, v6)?;
        Ok(IpPrefixes { v4, v6 })
    }

    /// The prefix length for IPv4 addresses.
    pub fn v4(&self) -> u8 {
        self.v4
    }

    /// The prefix length for IPv6 addresses.
    pub fn v6(&self) -> u8 {
        self.v6
    }

    /// The prefix length that applies to `ip`.
    fn of(&self, ip: &IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }
}

/// The proxies whose forwarding header is believed, which header that is, and how much of an
/// address counts as one client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardedHeader,
    prefixes: IpPrefixes,
}

static FORWARDED: HeaderName = http::header::FORWARDED;
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl TrustedProxies {
    /// No trusted proxy: the client is always the peer.
    pub fn none() -> Self {
        Self::default()
    }

    /// Proxies in these networks (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`), setting
    /// `X-Forwarded-For`.
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            networks: networks.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Proxies in networks given as text; a network that does not parse is an error.
    pub fn parse<'a>(
        networks: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ipnet::AddrParseError> {
        let networks: Vec<IpNet> = networks
            .into_iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|e| n.parse::<IpAddr>().map(IpNet::from).map_err(|_| e))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies::new(networks))
    }

    /// The same proxies, setting `header` instead (the only forwarding header then read).
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The same proxies, keying clients by these networks.
    pub fn with_prefixes(mut self, prefixes: IpPrefixes) -> Self {
        self.prefixes = prefixes;
        self
    }

    /// The forwarding header that is believed.
    pub fn header(&self) -> &ForwardedHeader {
        &self.header
    }

    /// How much of an address is one client.
    pub fn prefixes(&self) -> IpPrefixes {
        self.prefixes
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address as its IPv4 self).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// The client's address; see [`KeyExtractor::ClientIp`].
    ///
    /// Never an error a client can cause: the peer is the client unless it is a trusted proxy;
    /// then the client is the rightmost address of the believed header that is not a trusted
    /// proxy. Everything left of it was written by the client or an untrusted hop and is never
    /// read. An entry that is not an address (`unknown`, an obfuscated name, junk) stops the walk
    /// at the trusted hop right of it, which is then the client: a value the client cannot vary.
    pub fn client_ip(&self, request: &RequestView<'_>) -> Result<IpAddr, KeyError> {
        let peer = request.peer().ok_or(KeyError::NoPeer)?;
        if !self.contains(&peer) {
            return Ok(peer);
        }
        let headers = request.headers;
        let mut client = peer;
        match &self.header {
            ForwardedHeader::XForwardedFor => {
                for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
                    // Bytes, not text: a client's non-ASCII junk on the left must not make the
                    // proxy's own entry on the right unreadable.
                    match self.walk(value.as_bytes(), &mut client, |hop| Some(hop.trim())) {
                        Walk::Next => continue,
                        Walk::Done => break,
                    }
                }
            }
            ForwardedHeader::Forwarded => {
                for value in headers.get_all(&FORWARDED).iter().rev() {
                    match self.walk(value.as_bytes(), &mut client, forwarded_node) {
                        Walk::Next => continue,
                        Walk::Done => break,
                    }
                }
            }
            ForwardedHeader::Single(name) => {
                // Set by the edge proxy: the last instance is the one it wrote.
                if let Some(ip) = headers
                    .get_all(name)
                    .iter()
                    .next_back()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_addr(v.trim()))
                {
                    client = ip;
                }
            }
        }
        Ok(client)
    }

    /// The key of the request's client: its address, or its network under [`IpPrefixes`], as
    /// [`KeyExtractor::ClientIp`] counts it. For code that keys clients outside the layer (a
    /// gateway asking a remote rate limit service) and must agree with it.
    pub fn client_key(&self, request: &RequestView<'_>) -> Result<String, KeyError> {
        let mut out = CompactString::default();
        self.push_key(&mut out, self.client_ip(request)?);
        Ok(out.into_string())
    }

    /// Walks hops right to left, moving `client` to each; stops at the first untrusted address or
    /// the first entry that is not one.
    fn walk<'h>(
        &self,
        value: &'h [u8],
        client: &mut IpAddr,
        node: impl Fn(&'h str) -> Option<&'h str>,
    ) -> Walk {
        for hop in value.rsplit(|b| *b == b',') {
            let hop = std::str::from_utf8(hop).ok();
            let Some(ip) = hop.and_then(&node).and_then(parse_addr) else {
                return Walk::Done;
            };
            *client = ip;
            if !self.contains(&ip) {
                return Walk::Done;
            }
        }
        Walk::Next
    }

    /// Appends the key of `ip`: the address, or its network when the prefix is shorter than the
    /// address (`2001:db8:1:2::/64`).
    fn push_key(&self, out: &mut CompactString, ip: IpAddr) {
        push_network(out, ip, self.prefixes.of(&ip));
    }
}

/// Whether a walk over one header instance may go on to the instance left of it.
enum Walk {
    Next,
    Done,
}

/// The address of one `Forwarded` element's `for=` node: `[v6]:port`, `[v6]`, `v4:port` or `v4`.
fn forwarded_node(element: &str) -> Option<&str> {
    let node = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let node = node.trim_matches('"');
    Some(match node.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => node.split(':').next().unwrap_or(""),
    })
}

fn parse_addr(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// Appends `ip`'s network of `prefix` bits: the bare address when the prefix is the whole address.
fn push_network(out: &mut CompactString, ip: IpAddr, prefix: u8) {
    use std::fmt::Write as _;
    let full = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix >= full {
        return push_ip(out, ip);
    }
    match IpNet::new(ip, prefix) {
        Ok(net) => {
            push_ip(out, net.trunc().addr());
            let _ = write!(out, "/{prefix}");
        }
        Err(_) => push_ip(out, ip),
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

    fn client_via(header: ForwardedHeader, headers: &[(&str, &str)]) -> IpAddr {
        let trusted = TrustedProxies::parse(["10.0.0.0/8", "fd00::/8"])
            .unwrap()
            .with_header(header);
        let request = request(headers);
        trusted.client_ip(&RequestView::of(&request)).unwrap()
    }

    fn client(headers: &[(&str, &str)]) -> IpAddr {
        client_via(ForwardedHeader::XForwardedFor, headers)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_understands_every_node_form_when_it_is_the_named_header() {
        let forwarded = |h: &[(&str, &str)]| client_via(ForwardedHeader::Forwarded, h);
        assert_eq!(
            forwarded(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]),
            ip("192.0.2.60")
        );
        assert_eq!(
            forwarded(&[(
                "forwarded",
                r#"for="[2001:db8:cafe::17]:4711", for=10.1.1.1"#
            )]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            forwarded(&[
                ("forwarded", r#"For="192.0.2.43:47011""#),
                ("x-forwarded-for", "6.6.6.6")
            ]),
            ip("192.0.2.43")
        );
        // Not an address: the trusted hop that wrote it is the client.
        assert_eq!(forwarded(&[("forwarded", "for=unknown")]), ip("10.0.0.2"));
    }

    #[test]
    fn only_the_named_header_is_believed() {
        // The proxies append X-Forwarded-For: a client's own Forwarded or X-Real-IP is ignored.
        assert_eq!(
            client(&[
                ("forwarded", "for=6.6.6.6"),
                ("x-real-ip", "7.7.7.7"),
                ("x-forwarded-for", "1.2.3.4")
            ]),
            ip("1.2.3.4")
        );
        assert_eq!(client(&[("x-real-ip", "9.9.9.9")]), ip("10.0.0.2"));
        let single = ForwardedHeader::Single(HeaderName::from_static("cf-connecting-ip"));
        assert_eq!(
            client_via(
                single.clone(),
                &[
                    ("cf-connecting-ip", "5.5.5.5"),
                    ("x-forwarded-for", "6.6.6.6")
                ]
            ),
            ip("5.5.5.5")
        );
        assert_eq!(
            client_via(single, &[("cf-connecting-ip", "nonsense")]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn x_forwarded_for_over_several_headers_and_all_trusted_hops() {
        assert_eq!(
            client(&[
                ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
                ("x-forwarded-for", "10.9.9.9")
            ]),
            ip("8.8.8.8")
        );
        assert_eq!(
            client(&[("x-forwarded-for", "10.1.1.1, fd00::1")]),
            ip("10.1.1.1")
        );
        assert_eq!(client(&[]), ip("10.0.0.2"));
        // Junk left of the client is never read; junk from a trusted hop stops at that hop.
        assert_eq!(
            client(&[("x-forwarded-for", "junk, 1.2.3.4")]),
            ip("1.2.3.4")
        );
        assert_eq!(
            client(&[("x-forwarded-for", "1.2.3.4, junk, 10.3.3.3")]),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_selves() {
        let mut mapped = http::Request::builder().uri("/x").body(()).unwrap();
        mapped
            .extensions_mut()
            .insert(PeerAddr("[::ffff:10.0.0.2]:5000".parse().unwrap()));
        mapped
            .headers_mut()
            .insert("x-forwarded-for", "::ffff:198.51.100.7".parse().unwrap());
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let view = RequestView::of(&mapped);
        assert_eq!(view.peer(), Some(ip("10.0.0.2")));
        assert_eq!(trusted.client_key(&view).unwrap(), "198.51.100.7");
        assert!(trusted.contains(&ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_unless_set_otherwise() {
        let key = |trusted: &TrustedProxies, addr: &str| {
            let mut out = CompactString::default();
            trusted.push_key(&mut out, ip(addr));
            out.to_string()
        };
        let default = TrustedProxies::none();
        assert_eq!(key(&default, "2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key(&default, "2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64");
        assert_eq!(key(&default, "192.0.2.1"), "192.0.2.1");
        let wide = TrustedProxies::none().with_prefixes(IpPrefixes::new(24, 48).unwrap());
        assert_eq!(key(&wide, "192.0.2.77"), "192.0.2.0/24");
        assert_eq!(key(&wide, "2001:db8:1:2::1"), "2001:db8:1::/48");
        assert!(IpPrefixes::new(33, 64).is_err());
        assert!(IpPrefixes::new(32, 129).is_err());
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
    fn oversized_and_non_ascii_keys_are_hashed_not_refused() {
        let long = "k".repeat(ratelimit_core::MAX_KEY_LEN * 4);
        let other = format!("{long}x");
        let extractor = KeyExtractor::header(HeaderName::from_static("x-api-key"));
        let key_of = |value: &str| {
            let request = request(&[("x-api-key", value)]);
            extractor.extract(&RequestView::of(&request)).unwrap()
        };
        assert_eq!(key_of(&long).len(), 65);
        assert_ne!(key_of(&long), key_of(&other));
        let mut request = request(&[]);
        request.headers_mut().insert(
            "x-api-key",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        let key = extractor.extract(&RequestView::of(&request)).unwrap();
        assert!(key.starts_with('#'));
    }
}
