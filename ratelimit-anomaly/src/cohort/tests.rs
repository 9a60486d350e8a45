//! The cohort sets and the persistence cells: who becomes established, who is forgotten, who is
//! persistent.

use super::*;
use crate::sketch::hash_key;

fn small() -> Cohorts {
    Cohorts::new(CohortConfig {
        capacity: 10_000,
        epoch_ticks: 10,
        generation_epochs: 6,
    })
}

#[test]
fn a_client_seen_in_two_epochs_apart_is_established() {
    let cohorts = small();
    let a = hash_key("203.0.113.1");
    assert!(!cohorts.observe(a));
    for _ in 0..10 {
        cohorts.tick();
    }
    assert!(
        !cohorts.observe(a),
        "seen in the previous epoch and this one"
    );
    for _ in 0..10 {
        cohorts.tick();
    }
    assert!(
        cohorts.observe(a),
        "seen two epochs ago and again in this one"
    );
    assert!(cohorts.is_established(a));
    assert!(!cohorts.is_established(hash_key("203.0.113.2")));
}

/// A flood that starts in the last tick of an epoch, while the controller still learns, and
/// goes on into the next must not be established by the boundary it straddles: an attacker
/// who knows the epoch length could otherwise time its start to pass as "already here".
#[test]
fn a_flood_straddling_an_epoch_boundary_is_not_established() {
    let cohorts = small();
    for _ in 0..9 {
        cohorts.tick();
    }
    let flood: Vec<u64> = (0..100)
        .map(|i| hash_key(&format!("172.16.0.{i}")))
        .collect();
    // Tick 9, the epoch's last, and ticks 10-12 of the next: learning all along (the
    // controller has not yet turned suspicious, or watches while the backend is healthy).
    for _ in 0..4 {
        for &h in &flood {
            cohorts.observe(h);
        }
        cohorts.tick();
    }
    let passed = flood.iter().filter(|h| cohorts.is_established(**h)).count();
    assert_eq!(passed, 0, "established by straddling one epoch boundary");
}

#[test]
fn a_client_that_comes_back_after_a_gap_is_established() {
    let cohorts = small();
    let a = hash_key("203.0.113.9");
    cohorts.observe(a);
    for _ in 0..35 {
        cohorts.tick();
    }
    assert!(!cohorts.is_established(a));
    assert!(cohorts.observe(a), "seen three epochs ago and again now");
}

#[test]
fn newcomers_during_an_anomaly_stay_newcomers() {
    let cohorts = small();
    cohorts.set_learning(Learning::Off);
    let flood: Vec<u64> = (0..1000)
        .map(|i| hash_key(&format!("172.16.{i}")))
        .collect();
    for _ in 0..100 {
        for &h in &flood {
            cohorts.observe(h);
        }
        cohorts.tick();
    }
    let passed = flood.iter().filter(|h| cohorts.is_established(**h)).count();
    assert_eq!(passed, 0);
}

#[test]
fn clients_that_stop_coming_are_forgotten_and_active_ones_kept() {
    let cohorts = small();
    let (gone, active) = (hash_key("gone"), hash_key("active"));
    for tick in 0..200 {
        if tick < 20 {
            cohorts.observe(gone);
        }
        cohorts.observe(active);
        cohorts.tick();
    }
    assert!(cohorts.is_established(active));
    assert!(!cohorts.is_established(gone));
}

#[test]
fn false_positives_stay_rare_at_capacity() {
    let cohorts = small();
    for i in 0..10_000 {
        cohorts.observe(hash_key(&format!("old-{i}")));
    }
    for _ in 0..10 {
        cohorts.tick();
    }
    for i in 0..10_000 {
        cohorts.observe(hash_key(&format!("old-{i}")));
    }
    let false_positives = (0..10_000)
        .filter(|i| cohorts.is_established(hash_key(&format!("new-{i}"))))
        .count();
    assert!(false_positives < 500, "{false_positives} of 10,000");
}

#[test]
fn a_source_active_every_tick_is_persistent_and_a_browsing_person_is_not() {
    let persistence = Persistence::new(PersistenceConfig::default());
    let (machine, person) = (hash_key("172.16.0.1"), hash_key("198.51.100.7"));
    let mut person_peak = 0;
    for tick in 0..60u32 {
        persistence.observe(machine);
        persistence.observe(machine); // several requests a tick count once
        // A page every five seconds for twenty seconds, then gone; back a minute later.
        if tick % 5 == 0 && !(20..55).contains(&tick) {
            person_peak = person_peak.max(persistence.observe(person));
        }
        persistence.tick();
    }
    assert!(persistence.is_persistent(machine));
    assert_eq!(persistence.active(machine), 60);
    assert!(person_peak < PersistenceConfig::default().persistent_ticks);
    assert!(!persistence.is_persistent(person));
    assert_eq!(
        persistence.active(hash_key("never seen")),
        0,
        "an unseen identity has no history"
    );
}

#[test]
fn a_session_ends_after_the_gap() {
    let persistence = Persistence::new(PersistenceConfig::default());
    let source = hash_key("172.16.0.2");
    for _ in 0..20 {
        persistence.observe(source);
        persistence.tick();
    }
    assert!(persistence.is_persistent(source));
    for _ in 0..=PersistenceConfig::default().session_gap {
        persistence.tick();
    }
    assert_eq!(persistence.active(source), 0);
    assert_eq!(persistence.observe(source), 1, "a new session");
}
