//! The core conformance suite against moto: failed conditions return the item, transactions exist.
mod common;

// moto serves about a hundred and fifty requests a second: the checks take turns, and the bound is
// checked with 8 concurrent callers (the replicas tests add more, in a smaller load).
ratelimit_core::store_conformance_tests!(common::moto(), one_at_a_time);
