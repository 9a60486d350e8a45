//! The key extractors' unit tests: forwarding headers and trust, IPv4-mapped and IPv6 clients,
//! the text of IP keys, and oversized keys.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use compact_str::CompactString;
use http::header::HeaderName;

use super::write::push_ip;
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
