//! Forwarding headers as a fuzzer sends them: whatever a client writes, the client's address is
//! the one the trusted proxy appended, and reading it never fails or panics. The committed corpus
//! (`tests/corpus/forwarding/`, one header value per file) is replayed on every run; the property
//! tests search further.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use http::{HeaderValue, Request};
use proptest::prelude::*;
use ratelimit_tower::{ForwardedHeader, PeerAddr, RequestView, TrustedProxies};

const PROXY_SAW: &str = "192.0.2.10";

fn client_of(header: &ForwardedHeader, name: &str, client_part: &[u8]) -> Option<IpAddr> {
    // The proxy appends what it saw to whatever the client sent.
    let appended = match header {
        ForwardedHeader::Forwarded => format!("for={PROXY_SAW}"),
        _ => PROXY_SAW.to_string(),
    };
    let mut value = client_part.to_vec();
    value.extend_from_slice(b", ");
    value.extend_from_slice(appended.as_bytes());
    let value = HeaderValue::from_bytes(&value).ok()?;
    let mut request = Request::builder().uri("/").body(()).unwrap();
    request.headers_mut().insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value,
    );
    request
        .extensions_mut()
        .insert(PeerAddr("127.0.0.1:9000".parse().unwrap()));
    let trusted = TrustedProxies::parse(["127.0.0.0/8", "10.0.0.0/8"])
        .unwrap()
        .with_header(header.clone());
    Some(trusted.client_ip(&RequestView::of(&request)).unwrap())
}

fn check(client_part: &[u8]) {
    let expected: IpAddr = PROXY_SAW.parse().unwrap();
    for (header, name) in [
        (ForwardedHeader::XForwardedFor, "x-forwarded-for"),
        (ForwardedHeader::Forwarded, "forwarded"),
    ] {
        if let Some(client) = client_of(&header, name, client_part) {
            assert_eq!(
                client,
                expected,
                "{name}: {:?}",
                String::from_utf8_lossy(client_part)
            );
        }
    }
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/forwarding");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        check(&std::fs::read(entry.unwrap().path()).unwrap());
        seen += 1;
    }
    assert!(seen > 0, "the corpus is empty");
}

proptest! {
    #[test]
    fn whatever_the_client_writes_the_proxy_entry_wins(part in proptest::collection::vec(any::<u8>(), 0..200)) {
        check(&part);
    }

    #[test]
    fn address_like_garbage_never_moves_the_client(
        parts in proptest::collection::vec(
            prop_oneof![
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
                "for=\"?\\[?[0-9a-f:]{2,20}\\]?(:[0-9]{1,5})?\"?",
                "10\\.[0-9]\\.[0-9]\\.[0-9]",
                "[ ,;=\"a-z]{0,10}",
            ],
            0..6,
        )
    ) {
        check(parts.join(", ").as_bytes());
    }
}
