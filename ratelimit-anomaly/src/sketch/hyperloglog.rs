//! HyperLogLog on atomic registers: how many distinct keys, in 4 KiB.

use std::sync::atomic::{AtomicU8, Ordering};

/// 2^12 registers: a standard error of about 1.6%.
const PRECISION: u32 = 12;
const REGISTERS: usize = 1 << PRECISION;

/// Estimates the number of distinct keys added since the last [`clear`](Self::clear).
#[derive(Debug)]
pub struct HyperLogLog {
    registers: Box<[AtomicU8]>,
}

impl Default for HyperLogLog {
    fn default() -> Self {
        Self::new()
    }
}

impl HyperLogLog {
    /// An empty estimator.
    pub fn new() -> Self {
        HyperLogLog {
            registers: (0..REGISTERS).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    /// Adds the key of `hash`.
    #[inline]
    pub fn add(&self, hash: u64) {
        let index = (hash >> (64 - PRECISION)) as usize;
        // The rank of the first set bit in the rest of the hash (1-based), with a sentinel bit so
        // the rank is bounded.
        let rest = (hash << PRECISION) | (1 << (PRECISION - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        // Relaxed: a register only ever grows, and fetch_max keeps the largest whatever the order.
        // Most adds do not raise their register: a plain load first spares them the atomic
        // read-modify-write (a compare-and-swap loop on x86).
        let register = &self.registers[index];
        if register.load(Ordering::Relaxed) < rank {
            register.fetch_max(rank, Ordering::Relaxed);
        }
    }

    /// The estimated number of distinct keys.
    pub fn estimate(&self) -> f64 {
        let m = REGISTERS as f64;
        let (mut sum, mut zeros) = (0.0, 0usize);
        for register in self.registers.iter() {
            let rank = register.load(Ordering::Relaxed);
            sum += 2f64.powi(-i32::from(rank));
            zeros += usize::from(rank == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            // Small cardinalities: linear counting is more accurate.
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Forgets every key.
    pub fn clear(&self) {
        for register in self.registers.iter() {
            register.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::hash_key;

    #[test]
    fn estimates_within_a_few_percent() {
        for n in [10usize, 1_000, 100_000] {
            let hll = HyperLogLog::new();
            for i in 0..n {
                hll.add(hash_key(&format!("10.0.{}.{}", i / 256, i % 256)));
                hll.add(hash_key(&format!("10.0.{}.{}", i / 256, i % 256))); // duplicates change nothing
            }
            let estimate = hll.estimate();
            let error = (estimate - n as f64).abs() / n as f64;
            assert!(error < 0.05, "{n} keys estimated as {estimate}");
        }
    }

    #[test]
    fn clear_forgets() {
        let hll = HyperLogLog::new();
        hll.add(hash_key("a"));
        hll.clear();
        assert_eq!(hll.estimate(), 0.0);
    }
}
