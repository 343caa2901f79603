"""labkit's simulator at scale: 10,000 workers and 1,000,000 requests, wall time and peak memory.

Runs ``simulate()`` on ``scenarios/fleet_10k.yaml`` (10,000 workers behind 4 gateways, Poisson
40k requests/s for 25 s: ≈ 1.0 M requests, p2c over eventually consistent registry views, a
heartbeat per worker per second) once per repeat, each in a fresh Python process, and reports:

- ``sim s``: wall time of ``simulate()`` alone, building the results (DataFrames, summary)
  included: what a user waits for after the scenario is loaded;
- ``process s``: the whole child process, interpreter start and imports included;
- ``peak RSS MB``: the child's peak resident set (``VmHWM``), the figure a machine must have.

    python benchmarks/bench_scale.py [--repeats R] [--set KEY=VALUE ...] [--json PATH]

A script, not a test: nothing here asserts on wall-clock time or memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import environment_line, peak_rss_mb, sim_environment, write_json

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "fleet_10k.yaml"
#: targets from issue 7 (printed next to the figures, never asserted)
TARGET_S = 30.0
TARGET_RSS_MB = 1536.0


def child(overrides: list[str]) -> None:
    """One run, in this (fresh) process; prints one JSON line."""
    from labkit.scenario import load_scenario
    from labkit.sim import simulate

    scenario = load_scenario(SCENARIO, overrides=overrides)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    cpu = time.process_time()
    results = simulate(scenario)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    summary = results.summary
    print(
        json.dumps(
            {
                "workers": scenario.workers.count,
                "requests": int(summary["requests_total"]),
                "sim_wall_s": wall,
                "sim_cpu_s": cpu,
                "rss_before_run_mb": rss_before,
                "rss_peak_mb": peak_rss_mb(),
                "p99_ms": summary["latency_ms"]["p99"],
                "completed": summary["requests"]["completed"],
            }
        )
    )


def run_once(overrides: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child"]
    for o in overrides:
        cmd += ["--set", o]
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    row["process_wall_s"] = time.perf_counter() - started
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs, each in a fresh process")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.set)
        return 0

    runs = [run_once(args.set) for _ in range(args.repeats)]
    env = sim_environment()
    print(environment_line(env))
    overrides = f" with {' '.join(args.set)}" if args.set else ""
    print(
        f"scenario: {SCENARIO.name}{overrides}; each run in a fresh process; "
        f"median of {args.repeats}"
    )
    print()
    header = (
        f"{'run':>3} {'workers':>7} {'requests':>9} {'sim s':>7} {'cpu s':>7} "
        f"{'req/wall-s':>10} {'process s':>9} {'peak RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>3} {r['workers']:>7,} {r['requests']:>9,} {r['sim_wall_s']:>7.2f} "
            f"{r['sim_cpu_s']:>7.2f} {r['requests'] / r['sim_wall_s']:>10,.0f} "
            f"{r['process_wall_s']:>9.2f} {r['rss_peak_mb']:>11.0f}"
        )
    wall = statistics.median(r["sim_wall_s"] for r in runs)
    rss = statistics.median(r["rss_peak_mb"] for r in runs)
    print()
    print(
        f"median: {runs[0]['requests']:,} requests on {runs[0]['workers']:,} workers in "
        f"{wall:.1f} s ({runs[0]['requests'] / wall:,.0f} req/wall-s), peak RSS {rss:.0f} MB"
    )
    print(
        f"target (issue 7): under {TARGET_S:g} s and {TARGET_RSS_MB / 1024:g} GB: "
        f"time {'met' if wall < TARGET_S else 'NOT met'}, "
        f"memory {'met' if rss < TARGET_RSS_MB else 'NOT met'}"
    )
    if args.json:
        payload = {"environment": env, "overrides": args.set, "runs": runs}
        write_json(payload, str(args.json), indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
