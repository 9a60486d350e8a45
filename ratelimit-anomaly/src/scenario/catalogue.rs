//! The labelled scenarios: the traffic each runs, when its attack starts and ends, and the limits.

use super::{Attack, Crowd};

/// One labelled scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: &'static str,
    /// The random seed: the same seed gives the same traffic.
    pub seed: u64,
    /// Ticks simulated.
    pub ticks: u32,
    /// Background clients (Zipf-distributed).
    pub clients: u32,
    /// Background requests per tick, averaged over the day.
    pub background: u32,
    /// Ticks in one simulated day.
    pub day_ticks: u32,
    /// The attack, and the ticks it starts and ends.
    pub attack: Attack,
    /// A flash crowd of people arriving from the attack's start (alone, or during the attack).
    pub crowd: Option<Crowd>,
    /// First tick of the attack.
    pub attack_start: u32,
    /// Tick the attack stops.
    pub attack_end: u32,
    /// Requests one client may send in a tick.
    pub per_client_limit: u32,
    /// Requests all clients together may send in a tick, before the controller scales it.
    pub global_limit: u32,
    /// Requests the backend serves in a tick at normal latency.
    pub capacity: u32,
}

impl Scenario {
    fn base(name: &'static str, attack: Attack) -> Self {
        Scenario {
            name,
            seed: 42,
            ticks: 600,
            clients: 100_000,
            background: 1_000,
            day_ticks: 400,
            attack,
            crowd: None,
            attack_start: 250,
            attack_end: 400,
            per_client_limit: 150,
            global_limit: 3_000,
            capacity: 2_000,
        }
    }

    /// Every labelled scenario.
    pub fn all() -> Vec<Scenario> {
        vec![
            Self::base(
                "single source flood",
                Attack::SingleSourceFlood { rate: 2_000 },
            ),
            Self::base(
                "distributed flood",
                Attack::DistributedFlood {
                    sources: 2_000,
                    per_source: 4,
                },
            ),
            // Thousands of new sources, each at a modest client's rate, five times the normal load.
            Self::base(
                "distributed flood 5x",
                Attack::DistributedFlood {
                    sources: 2_500,
                    per_source: 2,
                },
            ),
            Self::base(
                "slow ramp",
                Attack::SlowRamp {
                    sources: 2_000,
                    per_source: 4,
                },
            ),
            Self::base(
                "pulse wave",
                Attack::PulseWave {
                    sources: 2_000,
                    per_source: 4,
                    on: 10,
                    off: 20,
                },
            ),
            Scenario {
                capacity: 20_000,
                global_limit: 30_000,
                ..Self::base(
                    "flash crowd",
                    Attack::FlashCrowd {
                        sources: 3_000,
                        per_source: 2,
                    },
                )
            },
            // Thousands of real newcomers, people in short sessions, on the default backend.
            Scenario {
                crowd: Some(Crowd::people()),
                ..Self::base("flash crowd of people", Attack::None)
            },
            // Machines arriving as a crowd does, and staying, each at a modest client's rate.
            Self::base(
                "persistent sources",
                Attack::PersistentSources {
                    sources: 3_000,
                    arrive_ticks: 30,
                    per_source: 2,
                },
            ),
            // The 5x flood and the crowd of people at once: the flood's sources are persistent,
            // the people are not.
            Scenario {
                crowd: Some(Crowd::people()),
                ..Self::base(
                    "flash crowd during a flood",
                    Attack::DistributedFlood {
                        sources: 2_500,
                        per_source: 2,
                    },
                )
            },
            // Thousands of real newcomers on a big backend: healthy, so left alone.
            Scenario {
                capacity: 20_000,
                global_limit: 30_000,
                ..Self::base(
                    "flash crowd of 5,000",
                    Attack::FlashCrowd {
                        sources: 5_000,
                        per_source: 1,
                    },
                )
            },
        ]
    }

    /// Requests per tick each attack source sends at `tick`, and how many sources.
    pub(super) fn attack_at(&self, tick: u32) -> (u32, u32) {
        if tick < self.attack_start || tick >= self.attack_end {
            return (0, 0);
        }
        let into = tick - self.attack_start;
        match self.attack {
            Attack::None => (0, 0),
            Attack::SingleSourceFlood { rate } => (1, rate),
            Attack::DistributedFlood {
                sources,
                per_source,
            }
            | Attack::FlashCrowd {
                sources,
                per_source,
            } => (sources, per_source),
            Attack::SlowRamp {
                sources,
                per_source,
            } => {
                let span = (self.attack_end - self.attack_start).max(1);
                (sources * into / span, per_source)
            }
            Attack::PersistentSources {
                sources,
                arrive_ticks,
                per_source,
            } => (
                (sources * (into + 1) / arrive_ticks.max(1)).min(sources),
                per_source,
            ),
            Attack::PulseWave {
                sources,
                per_source,
                on,
                off,
            } => {
                if into % (on + off) < on {
                    (sources, per_source)
                } else {
                    (0, 0)
                }
            }
        }
    }
}
