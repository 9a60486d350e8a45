//! The time-stamp counter as a clock that can only run slow.
//!
//! Reading the CPU's counter costs a third of the kernel's `clock_gettime`, but a counter scaled
//! by an estimated frequency runs a little fast or a little slow against real time, and a limiter
//! whose clock runs fast admits more than `burst + rate × w` (governor's quanta clock did, by one
//! request, in this project's stress runs). So the frequency is calibrated against the kernel's
//! monotonic clock over a few milliseconds, bracketing every reading, and then the scale is
//! lowered past anything the calibration or the kernel's own adjustment (NTP slews the monotonic
//! clock by at most 500 ppm) can account for: no interval this clock measures is longer than the
//! real one, and a limiter on it under-admits by [`SLOW_BY`] of its rate, at most.
//!
//! It is used only where the counter is invariant (Linux reports `constant_tsc` and
//! `nonstop_tsc`, and uses the counter as its own clock source, so it is synchronised across
//! cores); everywhere else, and when `RATELIMIT_CLOCK=kernel` is set, the kernel's clock is read.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How much slower than real time the calibrated clock runs, at most: 0.2%, twice what NTP's
/// slew and the calibration's error can add up to.
pub const SLOW_BY: f64 = 0.002;

/// How long the calibration measures, once per process.
const CALIBRATION: Duration = Duration::from_millis(20);

/// The counter, with the scale from its units to nanoseconds (a 32.32 fixed-point factor).
#[derive(Debug)]
pub(crate) struct Calibrated {
    counter: quanta::Clock,
    scale: u64,
}

impl Calibrated {
    /// Nanoseconds since an arbitrary origin; never runs faster than real time.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let ticks = u128::from(self.counter.raw());
        // 64 × 64 bits into 128, shifted back: exact, and no overflow for centuries of ticks.
        u64::try_from((ticks * u128::from(self.scale)) >> 32).unwrap_or(u64::MAX)
    }
}

/// The calibrated counter, or `None` where it must not be trusted.
pub(crate) fn calibrated() -> Option<&'static Calibrated> {
    static CLOCK: OnceLock<Option<Calibrated>> = OnceLock::new();
    CLOCK.get_or_init(calibrate).as_ref()
}

fn calibrate() -> Option<Calibrated> {
    if std::env::var("RATELIMIT_CLOCK").is_ok_and(|v| v == "kernel") || !invariant_counter() {
        return None;
    }
    let counter = quanta::Clock::new();
    // One kernel reading between two counter readings, the tightest of a few tries: the kernel's
    // instant lies between them, so each counter reading is known to within half the bracket.
    let bracket = || {
        (0..32)
            .map(|_| {
                let before = counter.raw();
                let instant = Instant::now();
                let after = counter.raw();
                (after.saturating_sub(before), before, after, instant)
            })
            .min_by_key(|(width, ..)| *width)
    };
    let (_, start_before, _, start) = bracket()?;
    while start.elapsed() < CALIBRATION {
        std::hint::spin_loop();
    }
    let (_, _, end_after, end) = bracket()?;
    // The kernel's two instants lie within the brackets, so between them the counter moved at
    // most `end_after - start_before` ticks: nanoseconds over that many ticks is the lowest rate
    // the measurement allows. Lowered once more by SLOW_BY for the kernel's own slewing.
    let nanos = end.duration_since(start).as_nanos() as f64;
    let ticks = end_after.saturating_sub(start_before) as f64;
    let per_tick = nanos / ticks * (1.0 - SLOW_BY);
    if !per_tick.is_finite() || per_tick <= 0.0 {
        return None;
    }
    let scale = (per_tick * 4_294_967_296.0) as u64;
    (scale > 0).then_some(Calibrated { counter, scale })
}

/// Whether the counter runs at one rate on every core, including through sleep states, and the
/// kernel itself keeps time with it.
fn invariant_counter() -> bool {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return false;
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = flags
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    has("constant_tsc") && has("nonstop_tsc") && source.trim() == "tsc"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, MonotonicClock};

    /// Every interval the clock measures fits inside the kernel's interval around it.
    #[test]
    fn no_interval_is_longer_than_the_real_one() {
        let clock = MonotonicClock::new();
        println!("reads the counter: {}", clock.is_counter());
        for pause in [0u64, 1, 50, 1_000, 20_000] {
            let outer_start = Instant::now();
            let first = clock.now();
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_micros(pause) {
                std::hint::spin_loop();
            }
            let last = clock.now();
            let outer = outer_start.elapsed();
            assert!(last >= first, "the clock went back from {first} to {last}");
            let measured = Duration::from_nanos(last - first);
            assert!(measured <= outer, "{measured:?} measured in {outer:?}");
        }
    }

    /// Wall time is compared across replicas (DynamoDB): it must keep real time, not the
    /// counter's deliberate slowness. Over 200 ms a 0.2% slow wall clock would lose 400 µs.
    #[test]
    fn wall_time_keeps_real_time() {
        let clock = MonotonicClock::new();
        let before = clock.unix_now();
        let inner_start = Instant::now();
        while inner_start.elapsed() < Duration::from_millis(200) {
            std::hint::spin_loop();
        }
        let inner = inner_start.elapsed();
        let after = clock.unix_now();
        assert!(
            after - before >= inner,
            "{:?} of wall time in {inner:?}",
            after - before
        );
    }

    #[test]
    fn the_kernel_clock_can_be_chosen() {
        assert!(!MonotonicClock::kernel().is_counter());
    }
}
