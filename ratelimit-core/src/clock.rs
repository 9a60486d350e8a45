//! Time, injectable: a fast monotonic clock for production, a manual one for tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fast_clock::{Calibrated, calibrated};

/// A source of time for limiters.
///
/// Readings are nanoseconds since the clock's own epoch and never go backwards. Shared stores
/// that keep time on the client (DynamoDB) need wall-clock time instead: [`Clock::unix_now`].
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's epoch. Never decreases.
    fn now(&self) -> u64;

    /// Wall-clock time: the duration since the Unix epoch that corresponds to [`now`](Self::now).
    fn unix_now(&self) -> Duration;
}

/// The default clock: monotonic, fast, and never faster than real time.
///
/// Where the CPU's time-stamp counter is invariant and the kernel keeps time with it (Linux on
/// x86-64 with `constant_tsc`, `nonstop_tsc` and the `tsc` clock source), it reads the counter
/// (about a third of the cost of `clock_gettime`), scaled by a frequency calibrated against the
/// kernel's monotonic clock and then lowered by 0.2% ([`CLOCK_SLOW_BY`](crate::CLOCK_SLOW_BY)): no
/// interval it measures is longer than the real one, so a limiter on it can only under-admit, by
/// 0.2% of its rate at most. Everywhere else, or with `RATELIMIT_CLOCK=kernel` in the
/// environment, it reads the operating system's monotonic clock (`std::time::Instant`).
///
/// Why not the counter as `governor` reads it through `quanta`? quanta scales it by its best
/// estimate of the frequency, which runs fast as often as slow: on this project's machines a
/// limiter on it admitted one request more than `burst + rate × w` over windows of real time in
/// every stress run. An estimate biased to run slow keeps the bound.
///
/// Its epoch is the moment it was created; [`Clock::unix_now`] adds the kernel's monotonic time
/// since then to the wall-clock time read then, so wall time derived from it does not jump when the
/// system clock is adjusted, and never runs slow as [`now`](Clock::now) may.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    start: Instant,
    counter: Option<(&'static Calibrated, u64)>,
    unix_at_start: Duration,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        MonotonicClock {
            start: Instant::now(),
            counter: calibrated().map(|c| (c, c.now())),
            unix_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// The same clock reading the operating system's monotonic clock, whatever the CPU offers.
    pub fn kernel() -> Self {
        MonotonicClock {
            counter: None,
            ..Self::new()
        }
    }

    /// Whether this clock reads the calibrated time-stamp counter (else the kernel's clock).
    pub fn is_counter(&self) -> bool {
        self.counter.is_some()
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> u64 {
        if let Some((counter, origin)) = self.counter {
            return counter.now().saturating_sub(origin);
        }
        // Seconds and nanoseconds rather than `as_nanos`, which goes through u128. u64 nanoseconds
        // cover 584 years of uptime; saturate rather than wrap past that.
        let elapsed = self.start.elapsed();
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }

    fn unix_now(&self) -> Duration {
        // Always the kernel's clock: wall time is compared across replicas (DynamoDB keeps each
        // bucket's state in Unix nanoseconds), and the counter's deliberate slowness would put
        // a long-running replica behind the others by 0.2% of its uptime.
        self.unix_at_start.saturating_add(self.start.elapsed())
    }
}

/// A clock that moves only when told to, for tests. Clones share the same time.
///
/// ```
/// use ratelimit_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let seen_by_limiter = clock.clone();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(seen_by_limiter.now(), 5_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    // Relaxed is enough: the reading carries no other data, and tests that move the clock from
    // one thread and read it from another synchronise through their own joins or channels.
    nanos: Arc<AtomicU64>,
    unix_at_zero: Duration,
}

impl ManualClock {
    /// A clock at zero, whose zero is the Unix epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock at zero whose zero is the given wall-clock time.
    pub fn with_unix_epoch_offset(unix_at_zero: Duration) -> Self {
        ManualClock {
            nanos: Arc::default(),
            unix_at_zero,
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update so concurrent advances add up and the sum saturates instead of wrapping.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `nanos`; a value behind the current reading is ignored, so the clock
    /// stays monotonic.
    pub fn set(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }

    fn unix_now(&self) -> Duration {
        self.unix_at_zero
            .saturating_add(Duration::from_nanos(self.now()))
    }
}
