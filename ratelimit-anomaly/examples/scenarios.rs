//! Runs every labelled traffic scenario through the monitor and controller and prints a table:
//! time to detect and to mitigate, precision and recall of the penalised keys, legitimate traffic
//! limited, and time to relax after the attack.
//!
//! `cargo run --release -p ratelimit-anomaly --example scenarios -- [--plot DIR]`
//!
//! With `--plot DIR`, each scenario is also drawn as `DIR/<scenario>.svg`: legitimate and attack
//! traffic, what was admitted, the effective global limit, the detector's score, and the
//! controller's actions, over time.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use clap::Parser;
use plotters::prelude::*;
use ratelimit_anomaly::scenario::{Outcome, Scenario, run};
use ratelimit_anomaly::{ControllerConfig, State};

/// Run the labelled traffic scenarios through the anomaly controller.
#[derive(Parser)]
struct Args {
    /// Draw each scenario as an SVG in this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn plot(outcome: &Outcome, dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.svg", outcome.name.replace(' ', "_")));
    let file = path.clone();
    let root = SVGBackend::new(&file, (1100, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(480);
    let ticks = outcome.ticks.len() as u32;
    let peak = outcome
        .ticks
        .iter()
        .map(|t| (t.legitimate + t.attack).max(t.effective_limit))
        .max()
        .unwrap_or(1);
    let mut traffic = ChartBuilder::on(&top)
        .caption(
            format!("{}: requests per second", outcome.name),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0..ticks, 0..peak + peak / 10)?;
    traffic.configure_mesh().x_desc("second").draw()?;
    let series = |f: fn(&ratelimit_anomaly::scenario::TickRecord) -> u32| {
        outcome
            .ticks
            .iter()
            .map(move |t| (t.tick, f(t)))
            .collect::<Vec<_>>()
    };
    traffic
        .draw_series(LineSeries::new(series(|t| t.legitimate), &BLUE))?
        .label("legitimate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    traffic
        .draw_series(LineSeries::new(series(|t| t.attack), &RED))?
        .label("attack")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    traffic
        .draw_series(LineSeries::new(series(|t| t.admitted), &GREEN))?
        .label("admitted")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    traffic
        .draw_series(LineSeries::new(series(|t| t.effective_limit), &BLACK))?
        .label("effective global limit")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    traffic
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let mut score = ChartBuilder::on(&bottom)
        .caption(
            "anomaly score, state (shaded: mitigating) and actions (dots)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0..ticks, 0.0..1.05f64)?;
    score.configure_mesh().x_desc("second").draw()?;
    score.draw_series(
        outcome
            .ticks
            .iter()
            .filter(|t| t.state == State::Mitigating)
            .map(|t| {
                Rectangle::new(
                    [(t.tick, 0.0), (t.tick + 1, 1.05)],
                    RGBColor(255, 200, 200).filled(),
                )
            }),
    )?;
    score.draw_series(LineSeries::new(
        outcome.ticks.iter().map(|t| (t.tick, t.score)),
        &MAGENTA,
    ))?;
    score.draw_series(
        outcome
            .ticks
            .iter()
            .filter(|t| t.actions > 0)
            .map(|t| Circle::new((t.tick, 1.0), 4, BLACK.filled())),
    )?;
    root.present()?;
    Ok(path)
}

fn ticks(value: Option<u32>) -> String {
    value.map_or_else(|| "-".to_string(), |t| format!("{t} s"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    println!(
        "{:<27} {:>6} {:>8} {:>6} {:>8} {:>8} {:>15} {:>15} {:>15} {:>15} {:>15} {:>6}",
        "scenario",
        "detect",
        "mitigate",
        "global",
        "atk lim.",
        "atk >10s",
        "est b/d/a %",
        "new b/d/a %",
        "est/new >10s %",
        "crowd d/>10s %",
        "legit dur %",
        "relax"
    );
    for scenario in Scenario::all() {
        let o = run(&scenario, ControllerConfig::default());
        let pct = |v: f64| format!("{:.2}%", 100.0 * v);
        let three =
            |a: f64, b: f64, c: f64| format!("{:.1}/{:.1}/{:.1}", 100.0 * a, 100.0 * b, 100.0 * c);
        let two = |a: f64, b: f64| format!("{:.2}/{:.2}", 100.0 * a, 100.0 * b);
        println!(
            "{:<27} {:>6} {:>8} {:>6} {:>8} {:>8} {:>15} {:>15} {:>15} {:>15} {:>15} {:>6}",
            o.name,
            ticks(o.time_to_detect),
            ticks(o.time_to_mitigate),
            ticks(o.time_to_tighten_global),
            pct(o.attack_limited),
            pct(o.attack_limited_after_10),
            three(
                o.before.established,
                o.during.established,
                o.after.established
            ),
            three(o.before.newcomers, o.during.newcomers, o.after.newcomers),
            two(o.during_after_10.established, o.during_after_10.newcomers),
            two(o.during.crowd, o.during_after_10.crowd),
            pct(o.legitimate_limited_during),
            ticks(o.time_to_relax),
        );
        if let Some(dir) = &args.plot {
            println!("    drawn: {}", plot(&o, dir)?.display());
        }
    }
    Ok(())
}
