//! The controller's unit tests: the state machine, the key penalties and the global actions.

use super::*;
use std::time::Duration;

use super::keys::KEY_HISTORY;
use crate::health::CohortHealth;

fn tick(requests: u64, p99_ms: u64, errors: u64) -> TickStats {
    sourced(requests, p99_ms, errors, 500.0 + (requests % 7) as f64)
}

fn sourced(requests: u64, p99_ms: u64, errors: u64, sources: f64) -> TickStats {
    let mut stats = TickStats {
        requests,
        responses: requests,
        server_errors: errors,
        latency_p99: Duration::from_millis(p99_ms),
        ..TickStats::default()
    };
    stats.dimensions[0].distinct = sources;
    stats
}

/// An attacker cycling thousands of fresh keys through the heavy hitters must not wipe the
/// history of a key seen for a long time.
#[test]
fn churning_the_heavy_hitters_does_not_wipe_an_established_history() {
    use crate::sketch::HeavyHitter;
    let mut controller = Controller::new(ControllerConfig::default());
    let hitter = |key: String, count: u32| HeavyHitter {
        key,
        hash: 0,
        count,
    };
    for _ in 0..30 {
        let mut stats = tick(1000, 20, 0);
        stats.dimensions[0].heavy = vec![hitter("established".into(), 50)];
        controller.on_tick(&stats);
    }
    let id = (Dimension::Client, "established".to_string());
    assert!(
        controller
            .key_history
            .get(&id)
            .is_some_and(|h| h.seen() >= 30)
    );
    for round in 0..(KEY_HISTORY as u32 * 3 / 64) {
        let mut stats = tick(1000, 20, 0);
        stats.dimensions[0].heavy = (0..64)
            .map(|i| hitter(format!("churn-{round}-{i}"), 40))
            .collect();
        controller.on_tick(&stats);
    }
    assert!(controller.key_history.len() <= KEY_HISTORY);
    assert!(
        controller
            .key_history
            .get(&id)
            .is_some_and(|h| h.seen() >= 30),
        "the established key's history was wiped by churn"
    );
}

#[test]
fn a_surge_on_one_route_tightens_that_route_not_the_global_limit() {
    use crate::sketch::HeavyHitter;
    let routed = |login: u32, p99: u64, errors: u64| {
        let mut stats = tick(u64::from(900 + login), p99, errors);
        stats.dimensions[2].heavy = vec![
            HeavyHitter {
                key: "/login".into(),
                hash: 1,
                count: login,
            },
            HeavyHitter {
                key: "/orders".into(),
                hash: 2,
                count: 900,
            },
        ];
        stats
    };
    let mut controller = Controller::new(ControllerConfig::default());
    for i in 0..300 {
        controller.on_tick(&routed(100 + (i % 7) as u32, 5, 0));
    }
    let mut actions = Vec::new();
    for _ in 0..10 {
        actions.extend(
            controller
                .on_tick(&routed(5_000, 200, 500))
                .into_iter()
                .map(|d| d.action),
        );
    }
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::ScaleGlobal { .. })),
        "{actions:?}"
    );
    let route_factors: Vec<f64> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ScaleRoute {
                route,
                factor,
                reason,
            } if route == "/login" => {
                assert_eq!(reason.signal, Signal::RouteRate);
                Some(*factor)
            }
            _ => None,
        })
        .collect();
    assert_eq!(route_factors.first(), Some(&0.5), "{actions:?}");
    // Calm again: the route relaxes back to 1 and the controller to normal.
    for i in 0..100 {
        controller.on_tick(&routed(100 + (i % 7) as u32, 5, 0));
    }
    assert_eq!(controller.state(), State::Normal);
}

#[test]
fn a_small_sustained_rise_is_caught_by_the_cusum() {
    let mut controller = warmed_up(ControllerConfig::default());
    // Two spreads up (the warm-up varied by about 20): too small for the detector, not for
    // the CUSUM.
    let mut state = State::Normal;
    for _ in 0..30 {
        controller.on_tick(&tick(1_075, 5, 0));
        state = controller.state();
    }
    assert_eq!(state, State::Suspect);
}

#[test]
fn many_new_sources_at_a_steady_rate_are_the_distributed_flood_fingerprint() {
    let mut controller = warmed_up(ControllerConfig::default());
    let mut signals = Vec::new();
    for _ in 0..10 {
        for decided in controller.on_tick(&sourced(1_030, 50, 300, 20_000.0)) {
            if let Action::ScaleGlobal { reason, .. } = decided.action {
                signals.push(reason.signal);
            }
        }
    }
    assert_eq!(controller.state(), State::Mitigating);
    assert_eq!(signals.first(), Some(&Signal::SourceSpread));
}

fn warmed_up(config: ControllerConfig) -> Controller {
    let mut controller = Controller::new(config);
    for i in 0..300 {
        controller.on_tick(&tick(1_000 + (i % 7) * 10, 5, 0));
    }
    assert_eq!(controller.state(), State::Normal);
    controller
}

/// The health gate is measured per cohort: a flood whose own requests are slow and failing
/// (an expensive endpoint, a malformed payload) while the backend serves everyone else well
/// is not a reason to act on anyone. Judged on the whole, it was.
#[test]
fn an_attackers_own_failing_requests_do_not_make_the_backend_look_unhealthy() {
    let mut controller = warmed_up(ControllerConfig::default());
    for _ in 0..30 {
        // Few established clients answer in this tick (under the minimum to judge on them
        // alone); the people arriving are served fast; the flood's persistent sources get
        // slow 5xx answers.
        let mut stats = sourced(20_000, 2_000, 9_000, 5_000.0);
        stats.newcomer_requests = 19_500;
        stats.persistent_requests = 19_000;
        stats.established_health = CohortHealth::uniform(20, 0, Duration::from_millis(5));
        stats.newcomer_health = CohortHealth::uniform(480, 0, Duration::from_millis(5));
        stats.persistent_health = CohortHealth::uniform(19_000, 9_000, Duration::from_secs(2));
        let actions = controller.on_tick(&stats);
        assert!(
            actions
                .iter()
                .all(|d| matches!(d.action, Action::PenalizeKey { .. })),
            "{actions:?}"
        );
    }
    assert_ne!(controller.state(), State::Mitigating);
}

/// Every client already here doubles its rate at once (a deploy made them faster) on a
/// healthy backend: a new normal, which the baselines follow, so that the controller is
/// normal again and can tell the next flood from it. It stayed suspect for ever before.
#[test]
fn a_lasting_rise_of_the_established_clients_on_a_healthy_backend_becomes_normal() {
    let mut controller = warmed_up(ControllerConfig::default());
    let mut states = Vec::new();
    for i in 0..600 {
        let actions = controller.on_tick(&tick(2_000 + (i % 7) * 20, 5, 0));
        assert!(actions.is_empty(), "{actions:?}");
        states.push(controller.state());
    }
    assert!(
        states[..50].contains(&State::Suspect),
        "the rise went unnoticed"
    );
    assert_eq!(controller.state(), State::Normal);
}

#[test]
fn a_healthy_surge_is_watched_not_mitigated() {
    let mut controller = warmed_up(ControllerConfig::default());
    for _ in 0..50 {
        let actions = controller.on_tick(&tick(5_000, 5, 0));
        assert!(actions.is_empty(), "{actions:?}");
    }
    assert_eq!(controller.state(), State::Suspect);
}

#[test]
fn tightening_stops_at_the_floor_and_relaxing_is_additive() {
    let config = ControllerConfig::default();
    let mut controller = warmed_up(config.clone());
    let mut factors = Vec::new();
    for _ in 0..60 {
        for decided in controller.on_tick(&tick(20_000, 200, 2_000)) {
            if let Action::ScaleGlobal { factor, reason } = decided.action {
                assert_eq!(reason.signal, Signal::GlobalRate);
                factors.push(factor);
            }
        }
    }
    assert_eq!(controller.state(), State::Mitigating);
    assert_eq!(
        factors,
        vec![0.5, 0.25, 0.125, 0.1],
        "multiplicative, down to the floor"
    );
    let mut relaxed = Vec::new();
    for _ in 0..60 {
        for decided in controller.on_tick(&tick(1_000, 5, 0)) {
            if let Action::ScaleGlobal { factor, .. } = decided.action {
                relaxed.push(factor);
            }
        }
    }
    assert_eq!(controller.state(), State::Normal);
    assert_eq!(relaxed.len(), 9, "{relaxed:?}");
    for pair in relaxed.windows(2) {
        assert!((pair[1] - pair[0] - config.relax_step).abs() < 1e-9 || pair[1] == 1.0);
    }
    assert_eq!(controller.factor(), 1.0);
}

/// Whatever the traffic does after a flood (it stops dead, it falls to a trickle, it comes
/// back at its usual level), a tightening relaxes once the traffic is calm.
#[test]
fn a_tightening_always_relaxes_once_traffic_is_calm() {
    for after in [0u64, 1, 50, 1_000] {
        let config = ControllerConfig::default();
        let mut controller = warmed_up(config.clone());
        for _ in 0..20 {
            controller.on_tick(&tick(20_000, 200, 2_000));
        }
        assert!(controller.factor() < 1.0, "the flood was not mitigated");
        let ticks = config.quiet_ticks as usize + 9 + 5;
        for _ in 0..ticks {
            controller.on_tick(&tick(after, 5, 0));
        }
        assert_eq!(
            controller.factor(),
            1.0,
            "still tightened {} ticks after the flood gave way to {after} requests a tick \
             (state {:?})",
            ticks,
            controller.state()
        );
    }
}

/// Traffic that settles at a level above the baseline frozen when mitigation began (the day's
/// peak after a night-time flood), on a healthy backend: the tightening must relax. The
/// baseline does not learn while mitigating, so "elevated" alone can never end it.
#[test]
fn a_tightening_relaxes_on_a_healthy_backend_even_if_traffic_stays_above_the_old_baseline() {
    let config = ControllerConfig::default();
    let mut controller = warmed_up(config.clone());
    for _ in 0..20 {
        controller.on_tick(&tick(20_000, 200, 2_000));
    }
    assert!(controller.factor() < 1.0);
    for i in 0..(config.quiet_ticks + 9 + 5 + 60) {
        controller.on_tick(&tick(2_500 + u64::from(i % 7) * 10, 5, 0));
    }
    assert_eq!(controller.factor(), 1.0, "state {:?}", controller.state());
}

/// Traffic with a daily shape (a quiet night, a busy day from 08:00): once the seasonal
/// baseline knows the day, the morning's rise is what this time of day brings, and a backend
/// that is slow for a few minutes as it warms up is not met with a tightening. Against the
/// flat baseline every morning looked like a tenfold flood.
#[test]
fn the_morning_rise_is_compared_with_the_seasonal_baseline() {
    let config = ControllerConfig {
        tick: Duration::from_secs(60),
        ..ControllerConfig::default()
    };
    let mut controller = Controller::new(config);
    let minute = 60;
    let mut tightened_on_day = Vec::new();
    for i in 0u32..(6 * 24 * 60) {
        let at = i64::from(i) * minute;
        let hour = (at % 86_400) / 3_600;
        let day = (8..20).contains(&hour);
        let requests = if day { 2_000 } else { 200 } + u64::from(i % 7) * 5;
        // The first ten minutes of each day the backend is slow, as caches warm.
        let warming = day && (at % 86_400) - 8 * 3_600 < 600;
        let mut stats = tick(requests, if warming { 200 } else { 5 }, 0);
        stats.at = Some(at);
        for decided in controller.on_tick(&stats) {
            if matches!(decided.action, Action::ScaleGlobal { factor, .. } if factor < 1.0) {
                tightened_on_day.push(at / 86_400);
            }
        }
    }
    tightened_on_day.dedup();
    // The first days teach the season; from the fourth day on, mornings are expected.
    assert!(
        tightened_on_day.iter().all(|d| *d < 3),
        "tightened on days {tightened_on_day:?}"
    );
}
