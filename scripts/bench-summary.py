#!/usr/bin/env python3
"""Prints the median of every criterion benchmark, its rate, and its time relative to ratelimit's
(in the scale_out groups, whose contenders are all ratelimit, relative to the per_decision mode).

Usage: scripts/bench-summary.py [DIR]. Reads criterion's estimates.json files, so run
`cargo bench -p ratelimit-benches` first. DIR is where criterion wrote them: by default
$CRITERION_HOME when set (criterion writes there), else $CARGO_TARGET_DIR/criterion, else
target/criterion.
"""
import json
import os
import pathlib
import sys


def default_root():
    if os.environ.get("CRITERION_HOME"):
        return os.environ["CRITERION_HOME"]
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")


root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else default_root())
rows = {}
for estimates in sorted(root.glob("**/new/estimates.json")):
    bench = estimates.parent.parent
    group = str(bench.parent.relative_to(root))
    median = json.loads(estimates.read_text())["median"]["point_estimate"]
    rows.setdefault(group, []).append((bench.name, median))

def ours(name):
    return name.startswith("ratelimit") or name == "per_decision"


width = max([28] + [len(group) for group in rows])
print(f"{'group':{width}} {'contender':20} {'median':>10} {'per second':>12} {'time vs ratelimit':>18}")
for group, contenders in rows.items():
    reference = next((m for n, m in contenders if ours(n)), None)
    for name, median in sorted(contenders, key=lambda c: (not ours(c[0]), c[0])):
        ratio = f"{median / reference:.2f}x" if reference else ""
        unit = f"{median:.1f} ns" if median < 1e4 else f"{median / 1e3:.1f} us"
        print(f"{group:{width}} {name:20} {unit:>10} {1e9 / median:>12,.0f} {ratio:>18}")
