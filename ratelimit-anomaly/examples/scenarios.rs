//! Runs every labelled traffic scenario through the monitor and controller and prints a table:
//! time to detect and to mitigate, precision and recall of the penalised keys, legitimate traffic
//! limited, and time to relax after the attack.
//!
//! `cargo run --release -p ratelimit-anomaly --example scenarios`
#![allow(clippy::print_stdout)]

use ratelimit_anomaly::ControllerConfig;
use ratelimit_anomaly::scenario::{Scenario, run};

fn ticks(value: Option<u32>) -> String {
    value.map_or_else(|| "-".to_string(), |t| format!("{t} s"))
}

fn main() {
    println!(
        "{:<22} {:>8} {:>9} {:>9} {:>7} {:>12} {:>14} {:>8}",
        "scenario",
        "detect",
        "mitigate",
        "precision",
        "recall",
        "legit lim.",
        "legit lim. atk",
        "relax"
    );
    for scenario in Scenario::all() {
        let outcome = run(&scenario, ControllerConfig::default());
        println!(
            "{:<22} {:>8} {:>9} {:>9.2} {:>7.3} {:>11.2}% {:>13.2}% {:>8}",
            outcome.name,
            ticks(outcome.time_to_detect),
            ticks(outcome.time_to_mitigate),
            outcome.precision,
            outcome.recall,
            100.0 * outcome.legitimate_limited,
            100.0 * outcome.legitimate_limited_during,
            ticks(outcome.time_to_relax),
        );
    }
}
