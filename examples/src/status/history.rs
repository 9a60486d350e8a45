//! Decisions and denials per second over the last minutes, in a bounded ring.
//!
//! Apart from the board because this is the only state that grows with time: it is sampled from
//! cumulative counters once a second and keeps at most [`HISTORY_SECONDS`] samples, whatever the
//! uptime.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

/// How many one-second samples the ring keeps: five minutes.
pub const HISTORY_SECONDS: usize = 300;

/// Decisions and denials since the start, as the layer's or the service's counters tell them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests decided (admitted or denied).
    pub decisions: u64,
    /// Requests denied.
    pub denials: u64,
}

/// One sample: the rates between two readings of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken, in seconds since the Unix epoch.
    pub at: f64,
    /// Decisions a second since the previous sample.
    pub decisions: f64,
    /// Denials a second since the previous sample.
    pub denials: f64,
}

/// The last [`HISTORY_SECONDS`] samples, oldest first.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(Instant, Totals)>,
}

impl Default for History {
    fn default() -> Self {
        History {
            inner: Mutex::new(Ring {
                samples: VecDeque::with_capacity(HISTORY_SECONDS),
                last: None,
            }),
        }
    }
}

impl History {
    /// Records a reading of the cumulative counters taken at `now`. The first reading only sets
    /// the starting point. The rates are divided by the real time since the previous reading: on
    /// a busy machine a sampler's tick can come late, and a late tick is not a burst.
    pub fn record(&self, now: Instant, totals: Totals) {
        let mut ring = self.inner.lock();
        if let Some((then, before)) = ring.last {
            let elapsed = now.saturating_duration_since(then).as_secs_f64();
            if elapsed <= 0.0 {
                return;
            }
            // A counter never goes back; should one be replaced, the sample reads zero rather
            // than a huge negative wrap.
            let rate = |after: u64, before: u64| after.saturating_sub(before) as f64 / elapsed;
            let sample = Sample {
                at: unix_seconds(SystemTime::now()),
                decisions: rate(totals.decisions, before.decisions),
                denials: rate(totals.denials, before.denials),
            };
            if ring.samples.len() >= HISTORY_SECONDS {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
        }
        ring.last = Some((now, totals));
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner.lock().samples.iter().copied().collect()
    }

    /// The newest sample, if one was taken.
    pub fn latest(&self) -> Option<Sample> {
        self.inner.lock().samples.back().copied()
    }
}

/// Seconds since the Unix epoch (zero for a clock set before it).
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(decisions: u64, denials: u64) -> Totals {
        Totals { decisions, denials }
    }

    #[test]
    fn rates_are_per_second_of_real_time_and_the_ring_is_bounded() {
        let history = History::default();
        let start = Instant::now();
        history.record(start, totals(0, 0));
        assert!(history.samples().is_empty(), "the first reading is a start");
        // Two seconds late: 100 decisions over two seconds are 50 a second.
        history.record(start + Duration::from_secs(2), totals(100, 10));
        let latest = history.latest().unwrap_or(Sample {
            at: 0.0,
            decisions: -1.0,
            denials: -1.0,
        });
        assert_eq!((latest.decisions, latest.denials), (50.0, 5.0));
        for i in 0..(HISTORY_SECONDS as u64 + 50) {
            history.record(
                start + Duration::from_secs(3 + i),
                totals(100 + i * 7, 10 + i),
            );
        }
        assert_eq!(history.samples().len(), HISTORY_SECONDS);
        assert_eq!(history.latest().map(|s| s.decisions), Some(7.0));
    }

    #[test]
    fn a_counter_that_goes_back_reads_zero() {
        let history = History::default();
        let start = Instant::now();
        history.record(start, totals(100, 100));
        history.record(start + Duration::from_secs(1), totals(5, 5));
        assert_eq!(history.latest().map(|s| s.decisions), Some(0.0));
    }
}
