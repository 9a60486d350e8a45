//! The core conformance suite against moto: failed conditions return the item, transactions exist.
mod common;

// moto serves about a hundred requests a second: the checks take turns.
ratelimit_core::store_conformance_tests!(common::moto(), one_at_a_time);
