//! Writing an extracted key into the store key: addresses in their text form or their network,
//! and any other key bounded in length.
//!
//! Apart because every extractor ends here, on the path of every request, where an allocation or a
//! `Display` call shows.

use std::net::IpAddr;

use compact_str::CompactString;
use ipnet::IpNet;
use ratelimit_core::key::AddressText;

/// Appends `ip` in its usual text form, without the formatting machinery for IPv4
/// ([`AddressText`]): it is on the path of every request keyed by address.
pub(super) fn push_ip(out: &mut CompactString, ip: IpAddr) {
    out.push_str(AddressText::of(ip).as_str());
}

/// Appends a key taken from client data: itself when short, its SHA-256 when longer than a store
/// should hold (so a long value is a key of its own, never an error). See
/// [`ratelimit_core::key::bounded`].
pub(super) fn push_bounded(out: &mut CompactString, key: &str) {
    out.push_str(&ratelimit_core::key::bounded(key));
}

/// Appends `ip`'s network of `prefix` bits: the bare address when the prefix is the whole address.
pub(super) fn push_network(out: &mut CompactString, ip: IpAddr, prefix: u8) {
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
