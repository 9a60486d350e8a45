//! The core conformance suite against a real Redis server.
mod common;

ratelimit_core::store_conformance_tests!(common::standalone());
