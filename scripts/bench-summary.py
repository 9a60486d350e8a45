#!/usr/bin/env python3
"""Prints the median of every criterion benchmark, and each row's ratio to its first contender.

Usage: scripts/bench-summary.py [target/criterion]. Reads criterion's estimates.json files, so run
`cargo bench -p ratelimit-benches` first.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = {}
for estimates in sorted(root.glob("**/new/estimates.json")):
    bench = estimates.parent.parent
    group = str(bench.parent.relative_to(root))
    median = json.loads(estimates.read_text())["median"]["point_estimate"]
    rows.setdefault(group, []).append((bench.name, median))

print(f"{'group':44} {'contender':22} {'median':>12} {'vs ratelimit':>13}")
for group, contenders in rows.items():
    ours = dict(contenders).get("ratelimit")
    for name, median in sorted(contenders, key=lambda c: (c[0] != "ratelimit", c[0])):
        ratio = f"{median / ours:.2f}x" if ours else ""
        unit = f"{median:.1f} ns" if median < 1e4 else f"{median / 1e3:.1f} us"
        print(f"{group:44} {name:22} {unit:>12} {ratio:>13}")
