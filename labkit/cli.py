"""The ``labkit`` command line.

Errors users can fix (a bad scenario, a bad override) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from labkit import __version__
from labkit.errors import LabkitError, ScenarioError

EXIT_USAGE = 2

DESCRIPTION = """\
labkit: design and stress-test the service layer of a multi-agent runtime
(gateway, registry, router, balancing, failures) in simulation, from scenario files.
"""

EPILOG = """\
examples:
  labkit run scenarios/quickstart.yaml
  labkit run scenarios/quickstart.yaml --set balancer.strategy=p2c \
      --set workload.arrival.rate_rps=1800
  labkit run scenarios/quickstart.yaml --seed 3 --out out/qs-seed3
  labkit validate scenarios/*.yaml
  labkit compare scenarios/batching.yaml --vary batching.max_batch=1,4,16 \
      --vary workload.arrival.rate_rps=1500,2000,2500,3000
  labkit sweep scenarios/quickstart.yaml --grid balancer.strategy=round_robin,p2c,adaptive \
      --grid workload.arrival.rate_rps=2000,3000,3400 --repeats 5

--set takes dotted key paths into the scenario (values are parsed as YAML:
--set workers.agent_types=[chat,tools] works). Unknown keys are errors.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labkit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="simulate a scenario and write summary.json, tables and a report",
        description="Simulate a scenario on the SimPy driver and write its results.",
    )
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key by dotted path (repeatable)",
    )
    run.add_argument("--out", type=Path, help="output directory (default: out/<scenario name>)")
    run.add_argument("--no-report", action="store_true", help="skip the PNG plots and HTML report")
    run.add_argument("--quiet", "-q", action="store_true", help="print no summary or progress")

    comp = sub.add_parser(
        "compare",
        help="run a scenario several ways (a small grid) and compare the headline figures",
        description=(
            "Run every combination of the --vary values on the same seed and print one row per "
            "run; writes compare.csv and compare.png (throughput vs p99 per setting when a load "
            "key is varied, grouped bars otherwise)."
        ),
    )
    comp.add_argument("scenario", type=Path, help="scenario YAML file")
    comp.add_argument(
        "--vary",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2,...",
        help="a scenario key (dotted path) and the values to try (repeatable: a grid)",
    )
    comp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    comp.add_argument("--seed", type=int, help="override the scenario's seed")
    comp.add_argument("--out", type=Path, help="output directory (default: out/<name>-compare)")

    sw = sub.add_parser(
        "sweep",
        help="run a grid of settings x repeats on Dask: a tidy table, confidence intervals, plots",
        description=(
            "Run every combination of the --grid values, --repeats times each on seeds derived "
            "from the base seed, on a local Dask cluster (one process per core) or an existing "
            "one (--scheduler). Writes sweep.parquet (one row per run: grid values, repeat, "
            "seed, status, error, metrics), sweep_summary.csv (mean and 95% CI per grid "
            "point), sweep.json and report.html with p99-vs-load curves and heatmaps. A failed "
            "run is recorded with its error and the others go on; the exit status is then 1."
        ),
    )
    sw.add_argument("scenario", type=Path, help="scenario YAML file")
    sw.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a scenario key (dotted path) and the values to sweep (repeatable: every combination)",
    )
    sw.add_argument(
        "--repeats", type=int, default=1, help="runs per grid point, each on its own seed (1)"
    )
    sw.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key in every run (repeatable)",
    )
    sw.add_argument("--seed", type=int, help="base seed (default: the scenario's seed)")
    sw.add_argument(
        "--independent-seeds",
        action="store_true",
        help="a seed per run (default: repeat r has one seed at every grid point, common "
        "random numbers, so points are compared on the same traffic)",
    )
    sw.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use the Dask cluster at ADDRESS (tcp://HOST:PORT) and leave it running",
    )
    sw.add_argument("--workers", type=int, help="processes of the local cluster (default: cores)")
    sw.add_argument(
        "--serial", action="store_true", help="run in this process, one run at a time (no Dask)"
    )
    sw.add_argument(
        "--keep-records", action="store_true", help="also write every run's records to OUT/runs/"
    )
    sw.add_argument("--out", type=Path, help="output directory (default: out/<name>-sweep)")
    sw.add_argument("--no-report", action="store_true", help="skip the PNG plots and report")
    sw.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no table")

    gw = sub.add_parser(
        "gateway",
        help="run the live gRPC gateway (AutoGen's Agent Worker Protocol) until Ctrl-C",
        description=(
            "Serve AutoGen's Agent Worker Protocol (agents.AgentRpc) with labkit's policy core: "
            "unmodified AutoGen workers connect with GrpcWorkerAgentRuntime(host_address=...). "
            "Prints 'labkit gateway listening on HOST:PORT' once bound."
        ),
    )
    gw.add_argument("--scenario", type=Path, help="take gateway and balancer settings from it")
    gw.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gw.add_argument("--port", type=int, default=50051, help="port (0 picks a free one)")
    gw.add_argument("--timeout-ms", type=float, help="per-RPC deadline (default 30000)")
    gw.add_argument(
        "--api-key", dest="api_keys", action="append", default=[], help="accepted key (repeatable)"
    )
    gw.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    gw.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    live = sub.add_parser(
        "live",
        help="run a scenario against real processes on loopback (gateway, workers, load)",
        description=(
            "Start the gateway and workers.count labkit worker processes on 127.0.0.1, run the "
            "scenario's open-loop workload and faults against them, and write results in the "
            "same schema as `labkit run`. Every process is torn down at the end."
        ),
    )
    live.add_argument("scenario", type=Path, help="scenario YAML file")
    live.add_argument("--seed", type=int, help="override the scenario's seed")
    live.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    live.add_argument("--out", type=Path, help="output directory (default: out/<name>-live)")
    live.add_argument("--no-report", action="store_true", help="skip the PNG plots and report")
    live.add_argument("--quiet", "-q", action="store_true", help="print no summary or progress")

    cal = sub.add_parser(
        "calibrate",
        help="run a scenario live, fit the simulator to it, and compare the prediction",
        description=(
            "Run FILE live, fit workers.service_time and network.latency from the live "
            "records, simulate the original and the calibrated scenario, and print p50/p95/p99 "
            "and throughput side by side. Writes calibrated.yaml and calibration.csv."
        ),
    )
    cal.add_argument("scenario", type=Path, help="scenario YAML file")
    cal.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    cal.add_argument("--out", type=Path, help="output directory (default: out/<name>-calibrate)")

    wk = sub.add_parser(
        "worker",
        help="run a labkit worker process (synthetic agents) against a live gateway",
        description=(
            "Host synthetic agents whose service time follows the scenario's distribution; "
            "reports load and reconnects with backoff after a gateway restart."
        ),
    )
    wk.add_argument("--gateway", required=True, help="gateway address HOST:PORT")
    wk.add_argument(
        "--agent-type", dest="agent_types", action="append", default=[], help="(repeatable)"
    )
    wk.add_argument("--scenario", type=Path, help="take service time and concurrency from it")
    wk.add_argument("--service-time-ms", type=float, help="mean of an exponential service time")
    wk.add_argument("--concurrency", type=int, help="requests served at once (default 1)")
    wk.add_argument("--speed", type=float, default=1.0, help="service time is divided by it")
    wk.add_argument("--name", default="", help="client id (default: worker-<uuid>)")
    wk.add_argument("--topic", dest="topics", action="append", default=[], help="subscribe to")
    wk.add_argument("--api-key")
    wk.add_argument("--seed", type=int, default=0)
    wk.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    validate = sub.add_parser(
        "validate",
        help="check scenario files and report every problem",
        description="Check scenario files; prints one line per file.",
    )
    validate.add_argument("scenarios", type=Path, nargs="+", help="scenario YAML files")
    validate.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    from labkit.scenario import load_scenario
    from labkit.sim import simulate

    scenario = load_scenario(args.scenario, args.overrides, seed=args.seed)
    out = args.out or Path("out") / scenario.name
    return _execute(simulate, scenario, f"simulating {scenario.name}", out, args)


def _execute(run: Any, scenario: Any, label: str, out: Path, args: argparse.Namespace) -> int:
    """Run with a progress bar, write the results, print the summary (``run`` and ``live``)."""
    from labkit.progress import ProgressBar
    from labkit.report import format_summary

    bar = None if args.quiet else ProgressBar(label)
    try:
        results = run(scenario, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    paths = results.write(out, report=not args.no_report)
    if not args.quiet:
        print(format_summary(results.summary))
        print()
        print(f"wrote {paths['summary']}")
        if "report" in paths:
            print(f"report: {paths['report']}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from labkit.compare import compare, parse_vary, save_comparison
    from labkit.scenario import load_scenario

    vary = parse_vary(args.vary)
    name = load_scenario(args.scenario, args.overrides, seed=args.seed).name

    def announce(i: int, n: int, values: dict[str, str]) -> None:
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        print(f"[{i + 1}/{n}] {shown}", file=sys.stderr, flush=True)

    frame = compare(args.scenario, vary, overrides=args.overrides, seed=args.seed, on_run=announce)
    out = args.out or Path("out") / f"{name}-compare"
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "compare.csv", index=False)
    save_comparison(frame, list(vary), out / "compare.png")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()
    print(f"wrote {out / 'compare.csv'} and {out / 'compare.png'}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from labkit.sweep import SweepError, SweepProgress, parse_grid, plan_sweep, sweep
    from labkit.sweep_plots import summary_table

    if args.serial and args.scheduler:
        raise SweepError("--serial runs without Dask: drop it or --scheduler")
    if args.workers is not None and (args.scheduler or args.serial):
        raise SweepError(
            "--workers sizes the local Dask cluster; an existing cluster (--scheduler) or "
            "--serial has its own: drop --workers"
        )
    grid = parse_grid(args.grid)
    # validated in full before anything starts: a bad key or value fails here, in one line
    plan = plan_sweep(
        args.scenario,
        grid,
        repeats=args.repeats,
        overrides=args.overrides,
        seed=args.seed,
        common_random_numbers=not args.independent_seeds,
    )
    out = args.out or Path("out") / f"{plan.scenario}-sweep"
    print(
        f"sweep {plan.scenario}: {len(plan.points)} grid point(s) x {plan.repeats} repeat(s) = "
        f"{len(plan)} runs, base seed {plan.base_seed}",
        file=sys.stderr,
        flush=True,
    )
    bar = SweepProgress(f"sweep {plan.scenario}")

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        if row.get("status") == "failed":
            shown = ", ".join(f"{k}={row[k]}" for k in plan.keys)
            bar.note(
                f"run failed ({shown + ', ' if shown else ''}repeat {row['repeat']}, "
                f"seed {row['seed']}): {row['error']}"
            )
        if not args.quiet:
            bar(done, total, row)

    try:
        frame = sweep(
            args.scenario,
            grid,
            repeats=args.repeats,
            overrides=args.overrides,
            seed=args.seed,
            common_random_numbers=not args.independent_seeds,
            scheduler="serial" if args.serial else args.scheduler,
            workers=args.workers,
            keep_records=args.keep_records,
            out=out,
            report=not args.no_report,
            progress=progress,
        )
    finally:
        bar.close()
    meta = frame.attrs["sweep"]
    failed = int(meta["failed"])
    if not args.quiet:
        print(summary_table(frame).to_string(index=False))
        print()
        where = f"on {meta['scheduler']}"
        if meta["scheduler"] == "serial":
            where = "in this process (--serial)"
        elif meta.get("workers"):
            where += f" ({meta['workers']} workers)"
        print(f"{len(frame)} runs {where} in {meta['wall_s']:.1f} s, {failed} failed")
        print(f"wrote {out / 'sweep.parquet'}, {out / 'sweep_summary.csv'}")
        if not args.no_report:
            print(f"report: {out / 'report.html'}")
    if failed:
        print(
            f"error: {failed} of {len(frame)} runs failed (their errors are in sweep.parquet)",
            file=sys.stderr,
        )
        return 1
    return 0


def _live(args: argparse.Namespace) -> int:
    import yaml

    from labkit.live.run import run_live
    from labkit.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides, seed=args.seed)
    out = args.out or Path("out") / f"{scenario.name}-live"
    out.mkdir(parents=True, exist_ok=True)
    # the gateway and workers read the scenario from a file: give them the resolved one, so
    # --set and --seed reach them too
    resolved = out / "scenario.yaml"
    resolved.write_text(yaml.safe_dump(scenario.to_dict(), sort_keys=False))
    scenario = load_scenario(resolved)
    return _execute(run_live, scenario, f"live {scenario.name}", out, args)


def _calibrate(args: argparse.Namespace) -> int:
    import yaml

    from labkit.live.calibrate import calibrated, fit, side_by_side
    from labkit.live.run import run_live
    from labkit.scenario import load_scenario
    from labkit.sim import simulate

    scenario = load_scenario(args.scenario, args.overrides)
    out = args.out or Path("out") / f"{scenario.name}-calibrate"
    out.mkdir(parents=True, exist_ok=True)
    resolved = out / "scenario.yaml"
    resolved.write_text(yaml.safe_dump(scenario.to_dict(), sort_keys=False))
    scenario = load_scenario(resolved)
    print(f"live run of {scenario.name} ({scenario.duration_s:g} s)...", file=sys.stderr)
    live = run_live(scenario)
    live.write(out / "live", report=False)
    fitted = fit(live)
    tuned = calibrated(scenario, fitted)
    (out / "calibrated.yaml").write_text(yaml.safe_dump(tuned.to_dict(), sort_keys=False))
    table = side_by_side(
        {"live": live, "sim": simulate(scenario), "sim_calibrated": simulate(tuned)}
    )
    table.to_csv(out / "calibration.csv")
    print(
        f"fitted from {fitted['samples']} requests: service mean "
        f"{fitted['service_mean_ms']:g} ms, per-hop overhead mean {fitted['hop_mean_ms']:g} ms"
    )
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"\nwrote {out / 'calibrated.yaml'} and {out / 'calibration.csv'}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    import numpy as np

    from labkit.distributions import BatchSampler, parse_distribution
    from labkit.live.worker import WorkerOptions
    from labkit.live.worker import main as run_worker

    dist = parse_distribution({"dist": "exponential", "mean_ms": 10})
    concurrency = 1
    types = args.agent_types
    subscriptions: list[tuple[str, str, str]] = []
    queue_limit = None
    if args.scenario is not None:
        from labkit.scenario import load_scenario

        sc = load_scenario(args.scenario)
        dist, concurrency = sc.workers.service_time, sc.workers.concurrency
        queue_limit = sc.workers.queue_limit
        types = types or list(sc.workers.agent_types)
        subscriptions = [(s.kind, s.topic, s.agent_type) for s in sc.subscriptions]
    if args.service_time_ms is not None:
        if args.service_time_ms < 0:
            raise ScenarioError(f"--service-time-ms must be >= 0, got {args.service_time_ms:g}")
        dist = parse_distribution({"dist": "exponential", "mean_ms": args.service_time_ms})
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ScenarioError(f"--concurrency must be >= 1, got {args.concurrency}")
        concurrency = args.concurrency
    if args.speed <= 0:
        raise ScenarioError(f"--speed must be > 0, got {args.speed:g}")
    sampler = BatchSampler(dist, np.random.default_rng(args.seed))
    options = WorkerOptions(
        gateway=args.gateway,
        agent_types=tuple(types or ["agent"]),
        name=args.name,
        concurrency=concurrency,
        queue_limit=queue_limit,
        service_ms=sampler,
        speed=args.speed,
        subscriptions=tuple(
            subscriptions + [("type", t, a) for t in args.topics for a in types or ["agent"]]
        ),
        api_key=args.api_key,
        seed=args.seed,
    )
    return run_worker(options, args.log_level)


def _validate(args: argparse.Namespace) -> int:
    from labkit.scenario import load_scenario

    failed = 0
    for path in args.scenarios:
        try:
            scenario = load_scenario(path, args.overrides)
        except ScenarioError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
        else:
            print(
                f"ok: {path} ({scenario.name}: {scenario.workers.count} workers, "
                f"{scenario.duration_s:g} s, strategy {scenario.balancer.strategy})"
            )
    return EXIT_USAGE if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "live":
            return _live(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "gateway":
            from labkit.live.serve import main as serve_gateway

            return serve_gateway(
                args.scenario,
                args.host,
                args.port,
                args.timeout_ms,
                args.api_keys,
                args.metrics_port,
                args.log_level,
            )
        return _validate(args)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
