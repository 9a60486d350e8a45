//! The labelled scenarios' outcomes: floods are mitigated within a bounded time and relaxed after,
//! distributed floods by limiting the newcomers that came with them rather than the clients who
//! were already there, the single abuser is penalised and nobody else, flash crowds are left
//! alone; shadow mode and the allow list hold.
#![allow(clippy::unwrap_used)]

use ratelimit_anomaly::ControllerConfig;
use ratelimit_anomaly::scenario::{Attack, Outcome, Scenario, run};

fn scenario(name: &str) -> Scenario {
    Scenario::all()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

fn outcome(name: &str) -> Outcome {
    run(&scenario(name), ControllerConfig::default())
}

/// Quiet ticks, then one relaxing step per tick from the floor back to 1, plus a few ticks.
fn relax_bound(config: &ControllerConfig) -> u32 {
    config.quiet_ticks + ((1.0 - config.floor) / config.relax_step).ceil() as u32 + 5
}

#[test]
fn a_single_source_flood_penalises_the_source_and_nobody_else() {
    let o = outcome("single source flood");
    assert!(o.time_to_detect.unwrap() <= 3, "{o:?}");
    assert_eq!((o.precision, o.recall), (1.0, 1.0));
    assert!(
        o.legitimate_limited_during < 0.01,
        "{}",
        o.legitimate_limited_during
    );
}

#[test]
fn a_distributed_flood_is_mitigated_then_relaxed() {
    let config = ControllerConfig::default();
    let o = outcome("distributed flood");
    assert!(
        o.time_to_mitigate.unwrap() <= 10,
        "{:?}",
        o.time_to_mitigate
    );
    assert_eq!(o.precision, 1.0, "a legitimate key was penalised");
    assert!(
        o.time_to_relax.unwrap() <= relax_bound(&config),
        "{:?}",
        o.time_to_relax
    );
    // Never below the floor.
    let s = scenario("distributed flood");
    let floor = (f64::from(s.global_limit) * config.floor) as u32;
    assert!(o.ticks.iter().all(|t| t.effective_limit >= floor));
    // The backend is protected: what is admitted during the attack stays near its capacity.
    let during = &o.ticks[(s.attack_start + 10) as usize..s.attack_end as usize];
    assert!(
        during.iter().all(|t| t.admitted <= s.capacity),
        "the backend was left overloaded"
    );
}

/// Thousands of new sources, each at a modest client's rate (five and eight times the normal load):
/// at least 90% of their requests limited from ten seconds in, and the established clients keep
/// their limits: under 1% of their requests limited over the whole attack, and none once the
/// newcomers' budget has acted.
#[test]
fn distributed_floods_are_met_on_the_newcomers_not_the_established_clients() {
    for name in ["distributed flood", "distributed flood 5x"] {
        let o = outcome(name);
        assert!(
            o.time_to_mitigate.unwrap() <= 1,
            "{name}: {:?}",
            o.time_to_mitigate
        );
        assert_eq!(
            o.time_to_tighten_global, None,
            "{name}: everyone was limited"
        );
        assert!(
            o.attack_limited_after_10 >= 0.9,
            "{name}: {:.4} of the attack limited",
            o.attack_limited_after_10
        );
        assert!(
            o.during_after_10.established < 0.01,
            "{name}: {:.4} of established clients' requests limited",
            o.during_after_10.established
        );
        // The whole attack, the first tick included (the newcomers' budget is set at its end,
        // while the static global limit alone stands in it).
        assert!(o.during.established < 0.01, "{name}: {:?}", o.during);
        assert!(o.attack_limited >= 0.9, "{name}: {:.4}", o.attack_limited);
        assert!(
            o.before.established < 0.001 && o.after.established < 0.001,
            "{o:?}"
        );
    }
}

/// The legitimate newcomers who arrive during a flood (the long tail of the background) share
/// the newcomers' budget with the flood only until the flood's sources are persistent; from then
/// on the budget grows while the backend is healthy, and they are served.
#[test]
fn legitimate_newcomers_are_served_during_a_distributed_flood() {
    for name in ["distributed flood", "distributed flood 5x", "pulse wave"] {
        let o = outcome(name);
        assert!(
            o.during_after_10.newcomers < 0.01,
            "{name}: {:?}",
            o.during_after_10
        );
        assert!(o.during.newcomers < 0.1, "{name}: {:?}", o.during);
    }
}

#[test]
fn a_pulse_wave_and_a_slow_ramp_are_mitigated() {
    let pulse = outcome("pulse wave");
    assert!(
        pulse.time_to_mitigate.unwrap() <= 10,
        "{:?}",
        pulse.time_to_mitigate
    );
    assert!(pulse.attack_limited_after_10 >= 0.9, "{pulse:?}");
    assert!(pulse.during.established < 0.01, "{:?}", pulse.during);
    let ramp = outcome("slow ramp");
    let s = scenario("slow ramp");
    assert!(ramp.time_to_mitigate.unwrap() < s.attack_end - s.attack_start);
    assert!(pulse.time_to_relax.is_some() && ramp.time_to_relax.is_some());
    // The ramp's sources are still newcomers when it starts to hurt (they were not established
    // while the traffic was suspicious), so the clients who were there keep their limits.
    assert_eq!(ramp.time_to_tighten_global, None, "everyone was limited");
    assert!(ramp.during.established < 0.01, "{:?}", ramp.during);
    assert!(ramp.attack_limited >= 0.7, "{:.4}", ramp.attack_limited);
}

/// Thousands of people in short sessions at human rates, on the default backend (healthy): not
/// one of their requests limited, nothing done.
#[test]
fn a_flash_crowd_of_people_is_served() {
    let o = outcome("flash crowd of people");
    assert!(!o.mitigated, "{:?}", o.time_to_mitigate);
    assert_eq!(o.time_to_detect, None, "an action was taken");
    assert_eq!(o.during.crowd, 0.0, "{:?}", o.during);
    assert_eq!(o.during.established, 0.0, "{:?}", o.during);
    assert!(o.legitimate_limited < 1e-4);
}

/// Machines arriving as a crowd arrives, and staying at a steady rate: they hurt the backend, are
/// persistent, and are limited; the clients who were there are not.
#[test]
fn persistent_sources_at_a_machine_rate_are_limited() {
    let o = outcome("persistent sources");
    assert!(
        o.time_to_mitigate.unwrap() <= 10,
        "{:?}",
        o.time_to_mitigate
    );
    assert_eq!(o.time_to_tighten_global, None, "everyone was limited");
    assert!(o.attack_limited >= 0.9, "{:.4}", o.attack_limited);
    assert!(o.during.established < 0.01, "{:?}", o.during);
    assert!(o.during_after_10.newcomers < 0.1, "{:?}", o.during_after_10);
}

/// The 5x flood and a crowd of people at once: the flood is met (its sources are persistent), the
/// people are served once they are told apart, and the established clients keep their limits.
#[test]
fn a_flash_crowd_during_a_flood_is_served_and_the_flood_limited() {
    let o = outcome("flash crowd during a flood");
    assert!(
        o.time_to_mitigate.unwrap() <= 10,
        "{:?}",
        o.time_to_mitigate
    );
    assert_eq!(o.time_to_tighten_global, None, "everyone was limited");
    assert!(o.attack_limited_after_10 >= 0.9, "{o:?}");
    assert!(
        o.during_after_10.established < 0.01,
        "{:?}",
        o.during_after_10
    );
    assert!(o.during_after_10.crowd < 0.03, "{:?}", o.during_after_10);
    assert!(o.during.crowd < 0.1, "{:?}", o.during);
}

#[test]
fn shadow_mode_reports_but_applies_nothing() {
    let config = ControllerConfig {
        shadow: true,
        ..ControllerConfig::default()
    };
    let s = scenario("distributed flood");
    let o = run(&s, config);
    assert!(o.time_to_detect.is_some(), "shadow mode reported nothing");
    assert!(!o.mitigated);
    assert!(o.ticks.iter().all(|t| t.effective_limit == s.global_limit));
}

#[test]
fn the_allow_list_is_never_penalised() {
    let s = Scenario {
        attack: Attack::SingleSourceFlood { rate: 2_000 },
        ..scenario("single source flood")
    };
    let config = ControllerConfig {
        allow_list: vec!["172.16.0.0".to_string()],
        ..ControllerConfig::default()
    };
    let o = run(&s, config);
    assert_eq!(o.recall, 0.0, "an allowed key was penalised");
}

#[test]
fn with_the_forest_the_outcomes_hold() {
    let config = ControllerConfig {
        forest: Some(ratelimit_anomaly::forest::ForestConfig::default()),
        ..ControllerConfig::default()
    };
    let flood = run(&scenario("distributed flood"), config.clone());
    assert!(
        flood.time_to_mitigate.unwrap() <= 10,
        "{:?}",
        flood.time_to_mitigate
    );
    let crowd = run(&scenario("flash crowd"), config.clone());
    assert!(!crowd.mitigated);
    let single = run(&scenario("single source flood"), config);
    assert_eq!((single.precision, single.recall), (1.0, 1.0));
}
