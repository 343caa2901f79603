"""labkit's SimPy driver against a hand-written SimPy M/M/c model and Ciw, on the same load.

All three simulate λ = 720/s Poisson arrivals, exponential service with μ = 100/s and c = 8
servers (ρ = 0.9) over the same simulated horizon, ``N / λ + warmup`` seconds, so ≈ N customers
arrive after the warmup. The runs are interleaved (labkit, hand-written, Ciw, labkit, …) in one
process and the median wall time of each is reported; the ratios of the speeds are the figures
to quote, since absolute times depend on the (often shared, noisy) machine. Ciw is a
benchmark-only dependency (``pip install -e '.[bench]'``); without it its column is skipped.

    python benchmarks/bench_sim.py [--requests N] [--repeats R] [--json PATH] [--memory]

A script, not a test: nothing here asserts on wall-clock times.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import simpy
from benchlib import environment_line, peak_rss_mb, sim_environment, write_json

LAM = 720.0  # arrivals per second
MU = 100.0  # services per second per server (mean 10 ms)
C = 8  # servers
WARMUP_S = 10.0  # the idealized scenario's warmup; customers arriving earlier are not measured
SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "idealized.yaml"


@dataclass(frozen=True)
class Run:
    wall_s: float  # wall time of the simulation itself
    customers: int  # customers simulated, warmup included
    mean_ms: float  # mean sojourn (arrival to departure) of customers arriving after the warmup


def horizon_s(n: int) -> float:
    return n / LAM + WARMUP_S


def run_labkit(n: int, seed: int) -> Run:
    from labkit.scenario import load_scenario
    from labkit.sim import simulate

    scenario = load_scenario(
        SCENARIO,
        overrides=[f"duration_s={horizon_s(n)}", f"warmup_s={WARMUP_S}", f"seed={seed}"],
    )
    started = time.perf_counter()
    summary = simulate(scenario).summary
    wall = time.perf_counter() - started
    return Run(wall, int(summary["requests_total"]), float(summary["latency_ms"]["mean"]))


def run_handwritten(n: int, seed: int) -> Run:
    """M/M/c as written from the SimPy docs: one Resource, one process per customer."""
    rng = random.Random(seed)
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=C)
    horizon = horizon_s(n)
    sojourns: list[float] = []  # measured customers only
    served = 0

    def customer() -> simpy.events.ProcessGenerator:
        nonlocal served
        arrived = env.now
        with servers.request() as req:
            yield req
            yield env.timeout(rng.expovariate(MU))
        served += 1
        if arrived >= WARMUP_S:
            sojourns.append(env.now - arrived)

    def source() -> simpy.events.ProcessGenerator:
        while True:
            yield env.timeout(rng.expovariate(LAM))
            if env.now >= horizon:
                return
            env.process(customer())

    started = time.perf_counter()
    env.process(source())
    env.run()  # until every customer has left
    wall = time.perf_counter() - started
    return Run(wall, served, 1000.0 * statistics.fmean(sojourns))


def run_ciw(n: int, seed: int) -> Run:
    """The same M/M/c in Ciw 3 (one node, c servers, FIFO), run to the same horizon."""
    import ciw  # type: ignore[import-not-found]

    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=LAM)],
        service_distributions=[ciw.dists.Exponential(rate=MU)],
        number_of_servers=[C],
    )
    ciw.seed(seed)
    started = time.perf_counter()
    sim = ciw.Simulation(network)
    sim.simulate_until_max_time(horizon_s(n))
    wall = time.perf_counter() - started
    records = sim.get_all_records()
    measured = [r.waiting_time + r.service_time for r in records if r.arrival_date >= WARMUP_S]
    # Ciw stops at the horizon rather than draining, so the last few customers are not counted.
    return Run(wall, len(records), 1000.0 * statistics.fmean(measured))


RUNNERS: dict[str, Callable[[int, int], Run]] = {
    "labkit": run_labkit,
    "simpy-handwritten": run_handwritten,
    "ciw": run_ciw,
}


def models() -> dict[str, Callable[[int, int], Run]]:
    """The runners to compare: Ciw only if it is importable."""
    try:
        import ciw  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return {k: v for k, v in RUNNERS.items() if k != "ciw"}
    return dict(RUNNERS)


def erlang_c_mean_ms() -> float:
    """Mean sojourn of M/M/c (one shared FIFO queue), from the Erlang C formula."""
    a = LAM / MU
    rho = a / C
    head = sum(a**k / math.factorial(k) for k in range(C))
    tail = a**C / math.factorial(C) / (1 - rho)
    p_wait = tail / (head + tail)
    return 1000.0 * (1 / MU + p_wait / (C * MU - LAM))


def child(model: str, n: int, seed: int) -> None:
    """One run in a fresh process, printing its peak RSS (after imports, and at the end)."""
    run = RUNNERS[model]
    if model == "labkit":  # import the packages before the baseline is taken
        import labkit.scenario
        import labkit.sim  # noqa: F401
    elif model == "ciw":
        import ciw  # type: ignore[import-not-found]  # noqa: F401
    baseline = peak_rss_mb()
    run(n, seed)
    print(json.dumps({"rss_after_imports_mb": baseline, "rss_peak_mb": peak_rss_mb()}))


def memory(model: str, n: int, seed: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", model, "--requests", str(n), "--seed", str(seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000, help="customers after warmup")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per model")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak RSS, one subprocess per model"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.requests, args.seed)
        return 0

    runners = models()
    runs: dict[str, list[Run]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():  # interleaved: A, B, A, B, …
            # every run starts from a clean heap (untimed): no model pays for collecting the
            # cyclic garbage an earlier run left behind
            gc.collect()
            runs[name].append(run(args.requests, args.seed))

    rows: dict[str, dict[str, Any]] = {}
    for name, done in runs.items():
        wall = statistics.median(r.wall_s for r in done)
        rows[name] = {
            "customers": done[0].customers,
            "wall_s_median": wall,
            "customers_per_wall_s": done[0].customers / wall,
            "mean_sojourn_ms": done[0].mean_ms,
            "wall_s_runs": [r.wall_s for r in done],
        }
        if args.memory:
            rows[name].update(memory(name, args.requests, args.seed))

    env = sim_environment()
    print(environment_line(env))
    print(
        f"load: λ={LAM:g}/s, μ={MU:g}/s, c={C}, ρ={LAM / (C * MU):.2f}; horizon "
        f"{horizon_s(args.requests):.1f} s (warmup {WARMUP_S:g} s); seed {args.seed}; "
        f"median of {args.repeats} interleaved runs"
    )
    print()
    header = f"{'model':<18} {'customers':>9} {'wall s':>8} {'cust/wall-s':>12} {'mean ms':>8}"
    if args.memory:
        header += f" {'RSS MB':>7} {'(+run)':>7}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        line = (
            f"{name:<18} {row['customers']:>9} {row['wall_s_median']:>8.2f} "
            f"{row['customers_per_wall_s']:>12,.0f} {row['mean_sojourn_ms']:>8.2f}"
        )
        if args.memory:
            growth = row["rss_peak_mb"] - row["rss_after_imports_mb"]
            line += f" {row['rss_peak_mb']:>7.0f} {growth:>+7.0f}"
        print(line)
    print()
    ratio = (
        rows["labkit"]["customers_per_wall_s"] / rows["simpy-handwritten"]["customers_per_wall_s"]
    )
    print(f"speed ratio labkit / simpy-handwritten: {ratio:.2f}")
    ratio_ciw = None
    if "ciw" in rows:
        ratio_ciw = rows["labkit"]["customers_per_wall_s"] / rows["ciw"]["customers_per_wall_s"]
        print(f"speed ratio labkit / ciw:               {ratio_ciw:.2f}")
    theory = erlang_c_mean_ms()
    print(
        f"mean sojourn: M/M/{C} (Erlang C) = {theory:.2f} ms, which the shared queues "
        f"(hand-written SimPy, Ciw) should match; labkit routes by p2c to {C} single-slot "
        "workers, each with its own queue, so its mean is higher (a different discipline, "
        "not an error)."
    )
    if "ciw" not in rows:
        print("ciw: not installed, column skipped (pip install -e '.[bench]' to add it).")
    if args.memory:
        print(
            "RSS MB: peak resident set of a fresh process per model; (+run): growth over imports."
        )

    if args.json:
        payload = {
            "environment": env,
            "load": {"lambda_per_s": LAM, "mu_per_s": MU, "servers": C, "warmup_s": WARMUP_S},
            "requests": args.requests,
            "repeats": args.repeats,
            "seed": args.seed,
            "models": rows,
            "ratio_labkit_over_handwritten": ratio,
            "ratio_labkit_over_ciw": ratio_ciw,
            "erlang_c_mean_ms": theory,
        }
        write_json(payload, str(args.json), indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
