//! A seeded traffic generator with labelled scenarios, and a simulation that runs the monitor and
//! controller against it in simulated time.
//!
//! One tick is one second. Background traffic comes from 100,000 clients with Zipf-distributed
//! rates and a daily cycle (compressed into [`Scenario::day_ticks`]). Each client is held to a
//! per-client limit, and all traffic to a global limit that the controller scales. A backend of
//! fixed capacity answers what is admitted: past its capacity its latency climbs and it fails
//! requests, which is what the controller's health gate sees.

mod catalogue;
mod outcome;
mod simulation;

pub use catalogue::Scenario;
pub use outcome::{CohortShares, Outcome, TickRecord};
pub use simulation::run;

/// What happens on top of the background.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// Nothing: background only.
    None,
    /// One source sends `rate` requests a tick.
    SingleSourceFlood {
        /// Requests per tick.
        rate: u32,
    },
    /// `sources` new sources each send `per_source` requests a tick, under the per-client limit.
    DistributedFlood {
        /// Sources.
        sources: u32,
        /// Requests per tick from each.
        per_source: u32,
    },
    /// Like a distributed flood, growing linearly from nothing to full over the attack.
    SlowRamp {
        /// Sources at the end.
        sources: u32,
        /// Requests per tick from each.
        per_source: u32,
    },
    /// A distributed flood `on` ticks out of every `on + off`.
    PulseWave {
        /// Sources.
        sources: u32,
        /// Requests per tick from each.
        per_source: u32,
        /// Ticks on.
        on: u32,
        /// Ticks off.
        off: u32,
    },
    /// Malicious: `sources` new sources arriving over `arrive_ticks` ticks (as a crowd arrives)
    /// and staying, each sending `per_source` a tick: machines at a steady rate.
    PersistentSources {
        /// Sources once all have arrived.
        sources: u32,
        /// Ticks over which they arrive.
        arrive_ticks: u32,
        /// Requests per tick from each.
        per_source: u32,
    },
    /// Legitimate: `sources` new clients each sending `per_source` every tick for the whole
    /// window, on a backend big enough (machine-like, but wanted: a batch of new integrations).
    FlashCrowd {
        /// Sources.
        sources: u32,
        /// Requests per tick from each.
        per_source: u32,
    },
}

impl Attack {
    /// Whether this traffic is an attack (a flash crowd is legitimate).
    pub fn is_malicious(&self) -> bool {
        !matches!(self, Attack::None | Attack::FlashCrowd { .. })
    }
}

/// Legitimate newcomers as people come: a flash crowd (a link shared widely). They arrive over
/// `arrive_ticks` from the attack's start, each stays for `session_ticks` and sends a request in
/// each of those ticks with probability `chance` (pauses between pages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crowd {
    /// People arriving in all.
    pub people: u32,
    /// Ticks over which they arrive.
    pub arrive_ticks: u32,
    /// Ticks each stays.
    pub session_ticks: u32,
    /// Chance each sends a request in a tick of its session.
    pub chance: f64,
}

impl Crowd {
    /// Twenty thousand people over a minute, each for fifteen seconds at a request every five:
    /// a thousand requests a second from the crowd at its height, as much as the normal load.
    pub fn people() -> Self {
        Crowd {
            people: 20_000,
            arrive_ticks: 60,
            session_ticks: 15,
            chance: 0.2,
        }
    }
}
