//! Memory per key: ratelimit-core's keyed limiter next to governor's keyed state, each holding
//! 1,000,000 keys in debt, measured as the heap bytes each holds (not resident memory, which
//! depends on which of the two ran first: memory the allocator kept from the first is reused by
//! the second and never shows in its figure).
//!
//! Prints one line per contender; no timing, so it runs as a plain `main`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{Quota, RateLimiter};
use ratelimit_core::{KeyedLimiter, Policy};

/// The system allocator, counting the bytes it has handed out and not yet had back.
struct Counting;

// Relaxed: the count is read only after the measured work is done, on the same thread.
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: u64 = 1_000_000;

/// Heap bytes that `build` leaves held, per key.
fn bytes_per_key<T>(build: impl FnOnce() -> T) -> (f64, T) {
    let before = LIVE.load(Ordering::Relaxed);
    let held = build();
    let after = LIVE.load(Ordering::Relaxed);
    (after.saturating_sub(before) as f64 / KEYS as f64, held)
}

fn main() {
    // Ten an hour: no bucket is full again while the keys go in, so neither may drop one.
    let (ours, limiter) = bytes_per_key(|| {
        let limiter: KeyedLimiter<u64> = KeyedLimiter::new(Policy::per_hour(10).unwrap());
        for key in 0..KEYS {
            limiter.acquire(&key, 1).unwrap();
        }
        limiter
    });
    let held = limiter.len();
    drop(limiter);
    let (theirs, limiter) = bytes_per_key(|| {
        let limiter =
            RateLimiter::<u64, _, _>::keyed(Quota::per_hour(NonZeroU32::new(10).unwrap()));
        for key in 0..KEYS {
            let _ = limiter.check_key(&key);
        }
        limiter
    });
    let governor_held = limiter.len();
    drop(limiter);
    println!("memory_per_key (heap bytes, 1,000,000 u64 keys in debt)");
    println!("  ratelimit  {ours:6.1} bytes per key ({held} keys held)");
    println!("  governor   {theirs:6.1} bytes per key ({governor_held} keys held)");
    println!("  ratio      {:6.2}x", ours / theirs);
}
