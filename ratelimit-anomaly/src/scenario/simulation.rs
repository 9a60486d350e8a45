//! The simulation: seeded traffic (Zipf background, attack sources, a crowd's people) through the
//! limits, the monitor and the controller, in simulated time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{CohortShares, Outcome, Scenario, TickRecord};
use crate::controller::{Action, Controller, ControllerConfig};
use crate::monitor::{Monitor, RequestEvent, Standing};

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
