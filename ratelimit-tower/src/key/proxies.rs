//! Trusted proxies: the client's address from the one forwarding header the operator's proxies
//! set, walked from the nearest hop, and the prefixes addresses are keyed by.
//!
//! Apart because this is the part a client can lie to: only hops through trusted networks are
//! believed, and its parsing is tested on its own.

use std::net::{IpAddr, SocketAddr};

use compact_str::CompactString;
use http::header::HeaderName;
use ipnet::IpNet;

use super::write::push_network;
use super::{KeyError, RequestView};

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
    pub(super) fn of(&self, ip: &IpAddr) -> u8 {
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

    /// The client's address; see [`KeyExtractor::ClientIp`](super::KeyExtractor::ClientIp).
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
    /// [`KeyExtractor::ClientIp`](super::KeyExtractor::ClientIp) counts it. For code that keys clients outside the layer (a
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
    pub(super) fn push_key(&self, out: &mut CompactString, ip: IpAddr) {
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
