//! Any protobuf Envoy (or anyone) could send to ShouldRateLimit: an answer, OK or OVER_LIMIT,
//! unless the request names no domain or no descriptor; never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ratelimit_core::{Limiter, MemoryStore};
use ratelimit_examples::envoy::config::Config;
use ratelimit_examples::envoy::service::RateLimitServer;

const CONFIG: &str = "domain: edge
descriptors:
  - key: remote_address
    rate_limit: { unit: second, requests_per_unit: 5 }
  - key: t
    descriptors:
      - key: sub
        rate_limit: { unit: minute, requests_per_unit: 2 }
";

fn server() -> &'static (tokio::runtime::Runtime, RateLimitServer) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, RateLimitServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = Config::parse("fuzz.yaml", CONFIG).expect("the fuzz configuration");
        let server = RateLimitServer::new(config, Arc::new(Limiter::new(MemoryStore::new())));
        (runtime, server)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = RateLimitRequest::decode(data) else {
        return;
    };
    let (runtime, server) = server();
    let answer = runtime.block_on(server.decide(&request));
    let names_nothing = request.domain.is_empty()
        || request.descriptors.is_empty()
        || request.descriptors.iter().any(|d| d.entries.is_empty());
    assert!(answer.is_ok() || names_nothing, "{request:?}: {answer:?}");
});
