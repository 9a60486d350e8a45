//! The core conformance suite against dynalite: failed conditions return no item (the store reads
//! it instead), and there are no transactions (several keys are taken one by one, and given back).
mod common;

ratelimit_core::store_conformance_tests!(common::dynalite());
