//! Whatever a client writes in front of the trusted proxy's entry, the client is the address that
//! proxy appended, and reading it never fails.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use ratelimit_tower::{ForwardedHeader, PeerAddr, RequestView, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    for (header, name, appended) in [
        (ForwardedHeader::XForwardedFor, "x-forwarded-for", "192.0.2.10"),
        (ForwardedHeader::Forwarded, "forwarded", "for=192.0.2.10"),
    ] {
        let mut value = data.to_vec();
        value.extend_from_slice(b", ");
        value.extend_from_slice(appended.as_bytes());
        let Ok(value) = http::HeaderValue::from_bytes(&value) else {
            return;
        };
        let mut request = http::Request::new(());
        request.headers_mut().insert(name, value);
        request
            .extensions_mut()
            .insert(PeerAddr("127.0.0.1:9000".parse().unwrap()));
        let trusted = TrustedProxies::parse(["127.0.0.0/8", "10.0.0.0/8"])
            .unwrap()
            .with_header(header);
        let client = trusted.client_ip(&RequestView::of(&request)).unwrap();
        assert_eq!(client, "192.0.2.10".parse::<IpAddr>().unwrap());
    }
});
