//! The core conformance suite against a real Redis Cluster (three masters, three replicas). Its
//! multi-limit checks use keys in different slots, so they exercise the cross-slot path too.
mod common;

ratelimit_core::store_conformance_tests!(common::cluster());
