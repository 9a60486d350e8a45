//! The MemoryStore passes the same conformance suite as every shared store.

ratelimit_core::store_conformance_tests!(async { ratelimit_core::MemoryStore::new() });
