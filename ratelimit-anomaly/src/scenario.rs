//! A seeded traffic generator with labelled scenarios, and a simulation that runs the monitor and
//! controller against it in simulated time.
//!
//! One tick is one second. Background traffic comes from 100,000 clients with Zipf-distributed
//! rates and a daily cycle (compressed into [`Scenario::day_ticks`]). Each client is held to a
//! per-client limit, and all traffic to a global limit that the controller scales. A backend of
//! fixed capacity answers what is admitted: past its capacity its latency climbs and it fails
//! requests, which is what the controller's health gate sees.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::controller::{Action, Controller, ControllerConfig, State};
use crate::monitor::{Monitor, RequestEvent, Standing};

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
    fn attack_at(&self, tick: u32) -> (u32, u32) {
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

/// What the simulation saw at one tick: for tables and plots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRecord {
    /// The tick.
    pub tick: u32,
    /// Legitimate requests sent.
    pub legitimate: u32,
    /// Attack requests sent.
    pub attack: u32,
    /// Requests admitted.
    pub admitted: u32,
    /// Legitimate requests limited.
    pub legitimate_limited: u32,
    /// The global limit in force.
    pub effective_limit: u32,
    /// The detector's score.
    pub score: f64,
    /// The controller's state.
    pub state: State,
    /// Actions taken this tick.
    pub actions: usize,
}

/// Shares of legitimate requests limited, split by who sent them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CohortShares {
    /// Clients that were already there: seen before the attack in two epochs apart of the monitor's
    /// cohorts (the ground truth, kept apart from the monitor's own sets).
    pub established: f64,
    /// Every other legitimate client (first seen recently, or during the attack), the flash
    /// crowd's people included.
    pub newcomers: f64,
    /// The flash crowd's people alone (0 without a crowd).
    pub crowd: f64,
}

/// How a scenario went.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The scenario.
    pub name: &'static str,
    /// Ticks from the attack's start to the first action (key penalty or global tightening).
    pub time_to_detect: Option<u32>,
    /// Ticks from the attack's start to the first mitigation: the newcomers' budget or a global
    /// tightening.
    pub time_to_mitigate: Option<u32>,
    /// Ticks from the attack's start to the first global tightening.
    pub time_to_tighten_global: Option<u32>,
    /// Share of attack requests limited over the whole attack.
    pub attack_limited: f64,
    /// Share of attack requests limited from ten ticks into the attack to its end.
    pub attack_limited_after_10: f64,
    /// Legitimate requests limited before the attack, by cohort.
    pub before: CohortShares,
    /// ... while it ran.
    pub during: CohortShares,
    /// ... from ten ticks into the attack to its end (once mitigation has had time to act).
    pub during_after_10: CohortShares,
    /// ... after it.
    pub after: CohortShares,
    /// Of the keys penalised, the share that were attack sources.
    pub precision: f64,
    /// Of the attack sources, the share penalised.
    pub recall: f64,
    /// Share of legitimate requests limited over the whole run.
    pub legitimate_limited: f64,
    /// Share of legitimate requests limited while the attack ran.
    pub legitimate_limited_during: f64,
    /// Ticks from the attack's end until every mitigation was lifted (None: never mitigated or
    /// never lifted).
    pub time_to_relax: Option<u32>,
    /// Whether anything was mitigated (a newcomers' budget or the global limit).
    pub mitigated: bool,
    /// Tick by tick.
    pub ticks: Vec<TickRecord>,
}

/// Zipf(1) over `n` ranks: a cumulative table to sample from.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: u32) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / f64::from(rank);
                total
            })
            .collect::<Vec<_>>();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = rng.f64() * total;
        self.cumulative
            .partition_point(|&c| c < target)
            .min(self.cumulative.len() - 1)
    }
}

/// Whose a simulated request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sender {
    /// A background client (Zipf), by index.
    Background(usize),
    /// An attack source (or a machine-like flash crowd's client), by index.
    Attack(usize),
    /// One of the flash crowd's people, by index.
    Person(usize),
}

/// Runs `scenario` with a controller of `config`; returns how it went.
pub fn run(scenario: &Scenario, config: ControllerConfig) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let zipf = Zipf::new(scenario.clients);
    let client_names: Vec<String> = (0..scenario.clients)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let (max_sources, _) = (scenario.attack_start..scenario.attack_end)
        .map(|t| scenario.attack_at(t))
        .max()
        .unwrap_or((0, 0));
    let attacker_names: Vec<String> = (0..max_sources.max(1))
        .map(|i| format!("172.16.{}.{}", i >> 8, i & 255))
        .collect();
    let crowd = scenario.crowd;
    let people = crowd.map_or(0, |c| c.people);
    let person_names: Vec<String> = (0..people)
        .map(|i| format!("198.18.{}.{}", i >> 8, i & 255))
        .collect();
    // Person j arrives at this tick (non-decreasing in j).
    let arrivals: Vec<u32> = crowd.map_or_else(Vec::new, |c| {
        (0..c.people)
            .map(|j| {
                let offset = u64::from(j) * u64::from(c.arrive_ticks) / u64::from(c.people.max(1));
                scenario.attack_start + u32::try_from(offset).unwrap_or(u32::MAX)
            })
            .collect()
    });
    let malicious = scenario.attack.is_malicious();

    let monitor = Monitor::default();
    let mut controller = Controller::new(config);
    let mut penalised: HashMap<String, bool> = HashMap::new();
    let mut factor = 1.0;
    let mut per_client: HashMap<Sender, u32> = HashMap::new();
    let mut records = Vec::with_capacity(scenario.ticks as usize);
    let (mut first_action, mut first_tighten, mut relaxed_at) = (None, None, None);
    let (mut legit_total, mut legit_limited) = (0u64, 0u64);
    let (mut legit_during, mut legit_limited_during) = (0u64, 0u64);
    let mut first_global = None;
    let mut newcomer_budget: Option<(u32, u32)> = None;
    // Ground truth of who was already there, as the monitor's cohorts define it: seen before the
    // attack in two epochs with a whole epoch between them.
    let epoch_ticks = u32::try_from(crate::monitor::MonitorConfig::default().cohorts.epoch_ticks)
        .unwrap_or(30)
        .max(1);
    let mut first_epoch: HashMap<usize, u32> = HashMap::new();
    let mut established_truth: HashSet<usize> = HashSet::new();
    // [phase][cohort] = (sent, limited); phases before, during, after, and during from ten ticks
    // in; cohorts established, new, the crowd's people.
    let mut shares = [[(0u64, 0u64); 3]; 4];
    let (mut attack_sent, mut attack_cut, mut attack_sent_10, mut attack_cut_10) =
        (0u64, 0u64, 0u64, 0u64);
    let mut responses: Vec<(Sender, bool)> = Vec::new();
    let mut senders: Vec<Sender> = Vec::new();
    let name_of = |sender: Sender| -> &str {
        match sender {
            Sender::Background(i) => &client_names[i],
            Sender::Attack(i) => &attacker_names[i],
            Sender::Person(i) => &person_names[i],
        }
    };

    for tick in 0..scenario.ticks {
        per_client.clear();
        let day = f64::from(tick % scenario.day_ticks) / f64::from(scenario.day_ticks);
        let cycle = 1.0 + 0.5 * (2.0 * std::f64::consts::PI * day).sin();
        let background = (f64::from(scenario.background) * cycle) as u32;
        let (sources, per_source) = scenario.attack_at(tick);
        let effective_limit = (f64::from(scenario.global_limit) * factor) as u32;
        let mut admitted = 0u32;
        let (mut newcomers_admitted, mut persistent_admitted) = (0u32, 0u32);
        let mut tick_legit_limited = 0u32;
        responses.clear();
        // The tick's requests, in the order they arrive: the background, the attack (each request
        // from a random source among those active), the crowd's people in their sessions.
        senders.clear();
        let attack_requests = sources * per_source;
        for _ in 0..background {
            senders.push(Sender::Background(zipf.sample(&mut rng)));
        }
        for _ in 0..attack_requests {
            senders.push(Sender::Attack(rng.u32(0..sources) as usize));
        }
        if let Some(crowd) = crowd {
            let first = arrivals.partition_point(|&a| a + crowd.session_ticks <= tick);
            let last = arrivals.partition_point(|&a| a <= tick);
            for person in first..last {
                if rng.f64() < crowd.chance {
                    senders.push(Sender::Person(person));
                }
            }
        }
        rng.shuffle(&mut senders);
        let total = senders.len() as u32;
        let mut attack_sent_tick = 0u32;
        for &sender in &senders {
            let name = name_of(sender);
            let from_attack = matches!(sender, Sender::Attack(_)) && malicious;
            attack_sent_tick += u32::from(from_attack);
            let count = per_client.entry(sender).or_insert(0);
            *count += 1;
            let blocked = penalised.get(name).copied().unwrap_or(false);
            // Which budget applies is decided before the request is recorded, as a layer's rule
            // decides before its observer sees the decision.
            let standing = monitor.standing(name);
            let over_newcomer_budget = match (standing, newcomer_budget) {
                (Standing::Newcomer, Some((fresh, _))) => newcomers_admitted >= fresh,
                (Standing::Persistent, Some((_, persistent))) => persistent_admitted >= persistent,
                _ => false,
            };
            let limited = blocked
                || *count > scenario.per_client_limit
                || over_newcomer_budget
                || admitted >= effective_limit;
            if !limited {
                admitted += 1;
                newcomers_admitted += u32::from(standing == Standing::Newcomer);
                persistent_admitted += u32::from(standing == Standing::Persistent);
            }
            responses.push((sender, !limited));
            let phase = if tick < scenario.attack_start {
                0
            } else if tick < scenario.attack_end {
                1
            } else {
                2
            };
            if from_attack {
                attack_sent += 1;
                attack_cut += u64::from(limited);
                if tick >= scenario.attack_start + 10 {
                    attack_sent_10 += 1;
                    attack_cut_10 += u64::from(limited);
                }
            } else {
                legit_total += 1;
                legit_limited += u64::from(limited);
                if phase == 1 {
                    legit_during += 1;
                    legit_limited_during += u64::from(limited);
                }
                tick_legit_limited += u32::from(limited);
                if let (Sender::Background(client), true) = (sender, tick < scenario.attack_start) {
                    let first = *first_epoch.entry(client).or_insert(tick / epoch_ticks);
                    if tick / epoch_ticks >= first + 2 {
                        established_truth.insert(client);
                    }
                }
                let cohorts: &[usize] = match sender {
                    Sender::Background(client) if established_truth.contains(&client) => &[0],
                    Sender::Person(_) => &[1, 2],
                    _ => &[1],
                };
                for &cohort in cohorts {
                    shares[phase][cohort].0 += 1;
                    shares[phase][cohort].1 += u64::from(limited);
                    if phase == 1 && tick >= scenario.attack_start + 10 {
                        shares[3][cohort].0 += 1;
                        shares[3][cohort].1 += u64::from(limited);
                    }
                }
            }
            monitor.request_started();
            monitor.record(&RequestEvent {
                client: Some(name),
                limited,
                ..Default::default()
            });
        }
        // The backend answers what was admitted; the rest were answered 429 at once.
        let load = f64::from(admitted) / f64::from(scenario.capacity);
        let latency = Duration::from_micros((2_000.0 * load.max(1.0).powi(3)) as u64);
        let failing = if load > 1.0 { 1.0 - 1.0 / load } else { 0.0 };
        for &(sender, served) in &responses {
            let name = Some(name_of(sender));
            if served {
                let status = if rng.f64() < failing { 503 } else { 200 };
                monitor.record_response_of(name, status, latency);
            } else {
                monitor.record_response_of(name, 429, Duration::from_micros(50));
            }
        }
        let mut stats = monitor.tick();
        // Simulated time: a simulated day is a day to the seasonal baseline.
        stats.at = Some(i64::from(tick) * 86_400 / i64::from(scenario.day_ticks.max(1)));
        let decided = controller.on_tick(&stats);
        monitor.cohorts().set_learning(controller.learning());
        for decided in &decided {
            if first_action.is_none() && tick >= scenario.attack_start {
                first_action = Some(tick - scenario.attack_start);
            }
            if !decided.apply {
                continue;
            }
            match &decided.action {
                Action::PenalizeKey { key, .. } => {
                    penalised.insert(key.clone(), true);
                }
                Action::LiftKey { key, .. } => {
                    penalised.insert(key.clone(), false);
                }
                // The simulation has one route: its traffic is the global traffic.
                Action::ScaleRoute { .. } => {}
                Action::ScaleGlobal { factor: new, .. } => {
                    if *new < factor && tick >= scenario.attack_start {
                        first_tighten.get_or_insert(tick - scenario.attack_start);
                        first_global.get_or_insert(tick - scenario.attack_start);
                    }
                    factor = *new;
                }
                Action::LimitNewcomers {
                    per_tick,
                    persistent_per_tick,
                    ..
                } => {
                    if tick >= scenario.attack_start {
                        first_tighten.get_or_insert(tick - scenario.attack_start);
                    }
                    newcomer_budget = Some((*per_tick, *persistent_per_tick));
                }
                Action::LiftNewcomers { .. } => newcomer_budget = None,
            }
        }
        let lifted = factor >= 1.0 && newcomer_budget.is_none();
        if lifted && first_tighten.is_some() && tick >= scenario.attack_end {
            relaxed_at.get_or_insert(tick - scenario.attack_end);
        }
        records.push(TickRecord {
            tick,
            legitimate: total - attack_sent_tick,
            attack: attack_sent_tick,
            admitted,
            legitimate_limited: tick_legit_limited,
            effective_limit,
            score: controller.last_score(),
            state: controller.state(),
            actions: decided.len(),
        });
    }
    let flagged: Vec<&String> = penalised.keys().collect();
    let attackers = |key: &str| key.starts_with("172.16.");
    let true_flags = flagged.iter().filter(|k| attackers(k)).count();
    let precision = if flagged.is_empty() {
        1.0
    } else {
        true_flags as f64 / flagged.len() as f64
    };
    let recall = if malicious {
        true_flags as f64 / f64::from(max_sources.max(1))
    } else {
        1.0
    };
    let share = |limited: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            limited as f64 / total as f64
        }
    };
    let cohort_shares = |phase: usize| {
        let [(es, el), (ns, nl), (cs, cl)] = shares[phase];
        CohortShares {
            established: share(el, es),
            newcomers: share(nl, ns),
            crowd: share(cl, cs),
        }
    };
    Outcome {
        name: scenario.name,
        time_to_detect: first_action,
        time_to_mitigate: first_tighten,
        time_to_tighten_global: first_global,
        attack_limited: share(attack_cut, attack_sent),
        attack_limited_after_10: share(attack_cut_10, attack_sent_10),
        before: cohort_shares(0),
        during: cohort_shares(1),
        during_after_10: cohort_shares(3),
        after: cohort_shares(2),
        precision,
        recall,
        legitimate_limited: share(legit_limited, legit_total),
        legitimate_limited_during: share(legit_limited_during, legit_during),
        time_to_relax: relaxed_at,
        mitigated: first_tighten.is_some(),
        ticks: records,
    }
}
