//! Writing an extracted key into the store key: addresses in their text form or their network,
//! and any other key bounded in length.
//!
//! Apart because every extractor ends here, on the path of every request, where an allocation or a
//! `Display` call shows.

use std::net::IpAddr;

use compact_str::CompactString;
use ipnet::IpNet;

/// Appends `ip` in its usual text form. IPv4 skips the formatting machinery: it is on the path of
/// every request keyed by address, and `Display` costs about as much as the rest of the key.
pub(super) fn push_ip(out: &mut CompactString, ip: IpAddr) {
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
