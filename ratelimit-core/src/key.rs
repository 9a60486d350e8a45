//! Bucket names built from client data: unambiguous, and of bounded length.
//!
//! A bucket name such as `domain|key=value` is a door for an attacker: a value that spells
//! `t|sub=s` lands in the bucket of another descriptor, and a value longer than a store accepts
//! turns a decision into an error. [`BucketKey`] closes both. Every part is written with its length
//! in front (`6:domain`), so no two lists of parts give the same name, and a name longer than
//! [`HASHED_ABOVE`] bytes is replaced by the SHA-256 of the whole encoding, which is the same on
//! every replica and as collision-resistant as SHA-256.
//!
//! ```
//! use ratelimit_core::BucketKey;
//!
//! let a = BucketKey::new("edge").part("t|sub=s").finish();
//! let b = BucketKey::new("edge").part("t").part("s").finish();
//! assert_ne!(a, b);
//! let long = BucketKey::new("edge").part(&"x".repeat(10_000)).finish();
//! assert!(long.len() <= ratelimit_core::MAX_KEY_LEN);
//! ```

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Encoded names longer than this many bytes are stored as their SHA-256 instead.
///
/// Short enough to keep Redis and DynamoDB keys small, long enough that ordinary names (an IP
/// address, an API key, a route) stay readable in the store.
pub const HASHED_ABOVE: usize = 256;

/// A bucket name under construction: a namespace and any number of parts, each length-prefixed.
#[derive(Debug, Clone)]
pub struct BucketKey {
    encoded: String,
}

impl BucketKey {
    /// A name in `namespace` (a rule, a domain): names of different namespaces never meet.
    pub fn new(namespace: &str) -> Self {
        let mut key = BucketKey {
            encoded: String::with_capacity(namespace.len() + 32),
        };
        key.push(namespace);
        key
    }

    /// Appends one part (a descriptor key or value, a header value, an address).
    pub fn part(mut self, value: &str) -> Self {
        self.push(value);
        self
    }

    /// Appends one part in place.
    pub fn push(&mut self, value: &str) {
        // `len:value|`: the length alone makes the encoding unambiguous; the bar is for people
        // reading keys in the store.
        let _ = write!(self.encoded, "{}:", value.len());
        self.encoded.push_str(value);
        self.encoded.push('|');
    }

    /// The name to give the store: the encoding itself, or `#` and the hex SHA-256 of the
    /// encoding when it is longer than [`HASHED_ABOVE`]. An encoding always starts with a digit,
    /// so a hashed name never equals an unhashed one.
    pub fn finish(self) -> String {
        if self.encoded.len() <= HASHED_ABOVE {
            return self.encoded;
        }
        hashed(&self.encoded)
    }
}

/// `#` and the hex SHA-256 of `name`: 65 bytes, whatever the input (text or raw bytes).
pub fn hashed(name: impl AsRef<[u8]>) -> String {
    let digest = Sha256::digest(name.as_ref());
    let mut out = String::with_capacity(1 + 2 * digest.len());
    out.push('#');
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `name` itself when a store accepts its length, else its [`hashed`] form: for keys that have one
/// part only and a format of their own (a client address, a header value).
pub fn bounded(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= HASHED_ABOVE && !name.starts_with('#') {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(hashed(name))
    }
}

/// An address in its usual text form, as `Display` writes it, on the stack.
///
/// IPv4 skips the formatting machinery: every request keyed or observed by address writes one,
/// and `Display` costs several times what the rest of a decision does. IPv6 goes through
/// `Display` (its zero compression is not worth writing twice).
///
/// ```
/// use ratelimit_core::key::AddressText;
///
/// let ip: std::net::IpAddr = "203.0.113.7".parse()?;
/// assert_eq!(AddressText::of(ip).as_str(), "203.0.113.7");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Copy)]
pub struct AddressText {
    // `Display` writes at most 39 bytes (`ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`); 45 would hold
    // any text form of an address, the mixed one (`…:ffff:255.255.255.255`) included.
    buffer: [u8; 45],
    len: usize,
}

impl AddressText {
    /// The text of `ip`.
    pub fn of(ip: std::net::IpAddr) -> Self {
        let mut text = AddressText {
            buffer: [0; 45],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + (octet / 10) % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            // At most 39 bytes, so the buffer holds it and the write cannot fail.
            std::net::IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters are ever written.
        std::str::from_utf8(self.buffer.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }

    #[inline]
    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buffer.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }
}

impl std::fmt::Write for AddressText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buffer.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl std::fmt::Debug for AddressText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_KEY_LEN;
    use proptest::prelude::*;

    #[test]
    fn address_text_is_what_display_writes() {
        for text in [
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "::",
            "2001:db8::1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap_or(std::net::IpAddr::from([0; 4]));
            assert_eq!(AddressText::of(ip).as_str(), text);
        }
    }

    #[test]
    fn a_value_that_spells_a_deeper_descriptor_is_another_key() {
        let depth_one = BucketKey::new("d").part("t").part("t|4:sub|1:s").finish();
        let depth_two = BucketKey::new("d").part("t").part("").part("sub").part("s");
        assert_ne!(depth_one, depth_two.finish());
    }

    #[test]
    fn long_names_are_hashed_to_a_fixed_size_the_same_everywhere() {
        let a = BucketKey::new("d").part(&"v".repeat(300)).finish();
        let b = BucketKey::new("d").part(&"v".repeat(300)).finish();
        let c = BucketKey::new("d").part(&"v".repeat(301)).finish();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 65);
        assert!(a.starts_with('#'));
    }

    #[test]
    fn bounded_never_returns_a_name_that_a_hash_could_take() {
        assert_eq!(bounded("203.0.113.7"), "203.0.113.7");
        assert_ne!(bounded("#abc"), "#abc");
        assert_eq!(bounded(&"k".repeat(5000)).len(), 65);
    }

    proptest! {
        #[test]
        fn different_parts_give_different_names(
            a in proptest::collection::vec(".{0,12}", 0..4),
            b in proptest::collection::vec(".{0,12}", 0..4),
        ) {
            let build = |parts: &[String]| {
                parts.iter().fold(BucketKey::new("ns"), |k, p| k.part(p)).finish()
            };
            prop_assert_eq!(a == b, build(&a) == build(&b));
        }

        #[test]
        fn address_text_of_any_address_is_what_display_writes(v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>()) {
            for ip in [std::net::IpAddr::from(v4), std::net::IpAddr::from(v6)] {
                let text = AddressText::of(ip);
                prop_assert_eq!(text.as_str(), ip.to_string());
            }
        }

        #[test]
        fn every_name_fits_a_store(parts in proptest::collection::vec(".{0,2000}", 0..4)) {
            let name = parts.iter().fold(BucketKey::new("ns"), |k, p| k.part(p)).finish();
            prop_assert!(!name.is_empty() && name.len() <= MAX_KEY_LEN);
        }
    }
}
