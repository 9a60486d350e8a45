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
///
/// Seeded once per process, at random: sketches are compared across ticks, so a key hashes the
/// same way for the life of the process, but an attacker cannot compute offline which keys share
/// a victim's count-min cells (and get the victim penalised for their traffic).
pub fn hash_key(key: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(process_seed()).hash_one(key)
}

fn process_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // Acquire/release inside OnceLock: every thread sees the one seed chosen.
    *SEED.get_or_init(|| {
        // RandomState draws its keys from the operating system's randomness.
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(0x5eed_u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// The seed shipped before was public (it is in the source): anyone could compute keys that
    /// collide with a victim's cells. The hash must not be computable from the source alone.
    #[test]
    fn the_hash_seed_is_not_the_public_constant() {
        let public = foldhash::fast::FixedState::with_seed(0x5eed_a11d_0b5e_55ed);
        let keys = ["203.0.113.7", "victim-api-key", "/login"];
        assert!(keys.iter().all(|k| hash_key(k) != public.hash_one(k)));
        assert_eq!(
            hash_key("stable"),
            hash_key("stable"),
            "one seed per process"
        );
    }
}
