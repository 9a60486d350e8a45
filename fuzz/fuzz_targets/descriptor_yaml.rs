//! Any text as an envoyproxy/ratelimit descriptor file: a configuration or a typed error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ratelimit_examples::envoy::config::Config::parse("fuzz.yaml", text);
    }
});
