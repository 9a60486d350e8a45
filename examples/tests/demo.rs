//! The demo runs by itself and exits with its summary: admitted, limited and mitigated traffic.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_demo_runs_and_exits_with_a_summary() {
    let output = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--seconds", "8"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "ingress gateway",
        "normal (40 clients)",
        "abusive (1 client)",
        "flood (500 sources)",
        "anomaly controller",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The abusive client is mostly refused and then blocked by the anomaly controller.
    let abusive = stdout.lines().find(|l| l.starts_with("abusive")).unwrap();
    let columns: Vec<u64> = abusive
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    let (sent, admitted, limited) = (columns[0], columns[1], columns[2]);
    assert!(limited > admitted && sent > 100, "{abusive}");
    assert!(stdout.contains("blocked 10.66.6.6"), "{stdout}");
}
