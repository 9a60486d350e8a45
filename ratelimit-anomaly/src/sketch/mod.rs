//! The hot path's memory: fixed-size, lock-free summaries of a stream of keys.
//!
//! Written by hand rather than taken from a crate: the sketch crates on crates.io
//! (`streaming_algorithms`, `hyperloglogplus`, `probabilistic-collections`, `pdatastructs`) take
//! `&mut self` to add an item, so sharing them between request tasks would need a lock on every
//! request. These are the same structures on atomic counters: adding is a few relaxed atomic
//! operations, from any number of threads at once.

mod count_min;
mod hyperloglog;
mod top_k;

pub use count_min::CountMin;
pub use hyperloglog::HyperLogLog;
pub use top_k::{HeavyHitter, TopK};

/// The one hash every sketch of a key uses (so a key is hashed once per request).
pub fn hash_key(key: &str) -> u64 {
    use std::hash::BuildHasher;
    // A fixed seed: sketches are compared across ticks, so a key must hash the same way each time.
    foldhash::fast::FixedState::with_seed(0x5eed_a11d_0b5e_55ed).hash_one(key)
}
