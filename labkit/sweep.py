"""Sweeps: every combination of a grid of scenario settings, repeated on derived seeds, on Dask.

``labkit compare`` answers "which of these few settings is better on this traffic?" with one run
each, serially. A sweep answers it with error bars: each grid point is run ``repeats`` times on
different seeds, the runs are spread over a Dask cluster (a ``LocalCluster`` sized to the machine
by default, or an existing scheduler), and the result is one tidy table — a row per run with the
grid values, the repeat, the seed, ``status`` ok/failed, the error text, and the headline metrics
under the same names ``labkit compare`` uses — plus :func:`aggregate` for means with t-based
confidence intervals over the repeats.

Seeds. A sweep has a *base seed*: the scenario's ``seed`` (after ``--set``), or ``seed=`` /
``--seed``. Every run's seed is derived from it by hashing (numpy ``SeedSequence``), so the same
base seed gives the same seeds, and since a simulation is deterministic per seed, the same
table. By default (``common_random_numbers=True``) repeat *r* uses the same seed at every grid
point: the strategies of one repeat see the same arrivals, job sizes, keys and worker speeds, so
differences between grid points come from the settings rather than from luck, and paired
comparisons are much sharper (this is what ``labkit compare`` does with its single seed).
Repeat 0 runs on the base seed itself, so a one-repeat sweep gives exactly the numbers of
``labkit compare`` and ``labkit run``; repeats 1, 2, ... get seeds hashed from (base, r). The
guarantee is that two runs of the *same* grid point never share a seed: a hash collision (about
1 in 4 billion per pair) is detected and re-drawn deterministically. With
``common_random_numbers=False`` every run gets its own seed, hashed from the base, the grid
point's *values* (not its position, so adding a value to the grid keeps the other runs' seeds)
and the repeat, unique across the whole sweep. Every row records its seed:
``labkit run FILE --set ... --seed SEED`` reproduces it exactly.

What travels. The client validates every combination with the scenario loader before anything
is submitted (a bad key fails fast with the file, line and key), then ships each run's validated
:class:`~labkit.scenario.Scenario` (about 3 kB pickled; workers need no access to the scenario
file, and CSV-based distributions carry their data). Workers return a small dict of metrics, not
the request records, so the client's memory stays flat however many runs there are; with
``keep_records=True`` each worker writes its run's full results (``records.parquet``,
``summary.json``, ...) under ``out/runs/`` itself, which needs a filesystem the workers share
(always true for the ``LocalCluster``).

Failures. An exception in a run, or a worker that dies running it (Dask's ``KilledWorker``),
makes that run's row ``status="failed"`` with the error text; the other runs continue.

Scripts that call :func:`sweep` with the default ``LocalCluster`` must guard their entry point
with ``if __name__ == "__main__":`` (Dask starts worker processes by *spawning* a fresh Python,
which imports the main module); notebooks and ``labkit sweep`` need nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd
import yaml

from labkit.compare import headline, parse_vary
from labkit.errors import LabkitError, ScenarioError
from labkit.scenario import Scenario, load_scenario
from labkit.scenario.loader import parse_override

if TYPE_CHECKING:
    from distributed import Client

    from labkit.results import Results

__all__ = [
    "CORE_METRICS",
    "GridPoint",
    "SweepError",
    "SweepPlan",
    "SweepProgress",
    "SweepRun",
    "aggregate",
    "derive_seeds",
    "expand_grid",
    "grid_keys",
    "metric_columns",
    "paired_difference",
    "parse_grid",
    "plan_sweep",
    "run_metrics",
    "sweep",
    "write_sweep",
]

#: what runs one scenario on a worker; tests inject failures through ``sweep(runner=...)``
Runner = Callable[[Scenario], "Results"]
#: ``progress(done, total, row)`` after every finished run (``row`` is that run's table row)
ProgressCallback = Callable[[int, int, dict[str, Any]], None]

#: the columns after the grid keys, identifying a run
RUN_COLUMNS = ("point", "repeat", "seed", "status", "error")
#: metric columns every sweep table has (NaN for failed runs), in this order; metrics of the
#: optional sections (state, cache, batching: see ``labkit.compare.headline``) follow them
CORE_METRICS = (
    "throughput_rps",
    "offered_rps",
    "error_rate",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "offered",
    "completed",
    "failed",
    "rejected",
    "timed_out",
    "retries",
    "misroutes",
    "sent_to_unreachable",
    "utilization_mean",
    "imbalance",
)
_COUNTS = (
    "offered",
    "completed",
    "failed",
    "rejected",
    "timed_out",
    "retries",
    "misroutes",
    "sent_to_unreachable",
)
#: columns after the metrics: where and how long each run took (not reproducible, not averaged)
RUN_FACTS = ("wall_s", "worker")

#: keeps the seeds a sweep derives apart from the child streams the simulator spawns from a seed
_SEED_DOMAIN = 0x6C61_6273
#: derived seeds are unsigned 32-bit integers: easy to type into ``--seed``
_SEED_BITS = 32
#: a run's error text is cut to this many characters
_MAX_ERROR = 600


class SweepError(LabkitError):
    """A sweep cannot start: no scheduler at the address, a cluster without workers, ..."""


# -- the grid ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One combination of grid values.

    ``values`` are the table's column values (YAML-parsed scalars: ``1000`` is a number,
    ``p2c`` a string); ``sets`` are the ``--set`` overrides that make the point.
    """

    index: int
    values: Mapping[str, Any]
    sets: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: a grid point, a repeat and its seed, with the validated scenario."""

    index: int
    point: int
    repeat: int
    seed: int
    values: Mapping[str, Any]
    sets: tuple[str, ...]
    scenario: Scenario = dataclasses.field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """A short file-system-safe name: ``p003-r01``."""
        return f"p{self.point:03d}-r{self.repeat:02d}"

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"{shown + ', ' if shown else ''}repeat {self.repeat}, seed {self.seed}"


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``--grid`` arguments (``KEY=V1,V2,...``, repeatable) → ``{key: [text, ...]}``."""
    return parse_vary(items, option="--grid")


def _value_text(value: Any) -> str:
    """A Python value as ``--set`` YAML text that parses back to it (``1e-07`` → ``1.0e-07``,
    which YAML reads as a number; a bare ``1e-07`` would be a string)."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        value = value.item()  # numpy scalars
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return text.removesuffix("...").strip()


def _identity(value: Any) -> tuple[str, Any]:
    """What makes two grid values the same: ``1000`` and ``1000.0`` are, ``1`` and ``true`` not."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    return ("text", json.dumps(value, sort_keys=True, default=str))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def expand_grid(grid: Mapping[str, Sequence[Any]] | None) -> list[GridPoint]:
    """The cartesian product of ``grid``, in key order, the last key varying fastest.

    Values that are strings are YAML text, as in ``--set`` (``"1000"`` is the number 1000,
    ``"[a, b]"`` a list); other values are used as they are. A key listed twice (as text and
    number, say), a value listed twice for one key, a key without values, and ``seed`` as a key
    (seeds are the sweep's: use ``seed=`` / ``--seed`` and ``repeats``) are errors. Columns keep
    the parsed scalars; a key whose values mix numbers and words, or are lists or mappings,
    keeps the values as text.
    """
    grid = dict(grid or {})
    parsed: dict[str, list[tuple[str, Any]]] = {}
    for raw_key, values in grid.items():
        if not isinstance(raw_key, str) or not raw_key.strip():
            raise ScenarioError(f"grid keys are dotted key paths, got {raw_key!r}")
        key = raw_key.strip()
        if key in parsed:
            raise ScenarioError(f"grid names {key!r} twice")
        if key == "seed":
            raise ScenarioError(
                "a sweep sets every run's seed itself: give the base seed with --seed (seed=) "
                "and the number of seeds per point with --repeats"
            )
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ScenarioError(f"grid {key}: expected a list of values, got {values!r}")
        if not values:
            raise ScenarioError(f"grid {key}: no values")
        items: list[tuple[str, Any]] = []
        seen: dict[tuple[str, Any], str] = {}
        for value in values:
            text = value if isinstance(value, str) else _value_text(value)
            _, value_parsed = parse_override(f"{key}={text}")
            ident = _identity(value_parsed)
            if ident in seen:
                raise ScenarioError(f"grid {key}: value {text!r} is listed twice")
            seen[ident] = text
            items.append((text, value_parsed))
        parsed[key] = items
    columns: dict[str, list[Any]] = {}
    for key, items in parsed.items():
        values_parsed = [v for _, v in items]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values_parsed)
        same_kind = numbers or len({type(v) for v in values_parsed}) == 1
        if same_kind and all(_scalar(v) for v in values_parsed):
            columns[key] = values_parsed
        else:
            columns[key] = [text for text, _ in items]
    keys = list(parsed)
    points = []
    choices = [range(len(parsed[k])) for k in keys]
    for index, combo in enumerate(itertools.product(*choices)):
        values = {k: columns[k][i] for k, i in zip(keys, combo, strict=True)}
        sets = tuple(f"{k}={parsed[k][i][0]}" for k, i in zip(keys, combo, strict=True))
        points.append(GridPoint(index, values, sets))
    return points


# -- seeds -------------------------------------------------------------------------------------


def _hashed_seed(base: int, key: Sequence[int]) -> int:
    state = np.random.SeedSequence(entropy=base, spawn_key=(_SEED_DOMAIN, *key)).generate_state(
        2, dtype=np.uint32
    )
    return ((int(state[0]) << 32) | int(state[1])) & ((1 << _SEED_BITS) - 1)


def _point_id(point: GridPoint) -> int:
    """A stable number for a grid point's values (not its position in the grid)."""
    text = json.dumps(sorted((k, _identity(v)) for k, v in point.values.items()), default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def derive_seeds(
    base_seed: int,
    points: Sequence[GridPoint],
    repeats: int,
    *,
    common_random_numbers: bool = True,
) -> list[list[int]]:
    """Seeds ``[point][repeat]``, derived from ``base_seed`` (see the module docstring).

    With common random numbers repeat 0 is ``base_seed`` and repeat *r* > 0 is hashed from
    (base, r), the same at every point; otherwise every run's seed is hashed from (base, the
    point's values, r). Seeds that must differ always do: a collision is re-drawn with a
    counter, deterministically.
    """
    if base_seed < 0:
        raise ScenarioError(f"seed must be >= 0, got {base_seed}")
    if repeats < 1:
        raise ScenarioError(f"repeats must be >= 1, got {repeats}")
    space = 1 << _SEED_BITS
    used: set[int] = set()

    def fresh(key: Sequence[int]) -> int:
        for attempt in itertools.count():
            seed = _hashed_seed(base_seed, (*key, attempt))
            if seed not in used:
                used.add(seed)
                return seed
        raise AssertionError("unreachable")

    if common_random_numbers:
        if repeats > space:
            raise ScenarioError(f"{repeats} repeats need more than {space} distinct seeds")
        used.add(base_seed)
        shared = [base_seed, *(fresh((r,)) for r in range(1, repeats))]
        return [list(shared) for _ in points]
    if repeats * len(points) > space:
        raise ScenarioError(f"{repeats * len(points)} runs need more than {space} distinct seeds")
    return [[fresh((_point_id(p), r)) for r in range(repeats)] for p in points]


# -- planning ----------------------------------------------------------------------------------


def _override_key(text: str) -> str:
    return text.partition("=")[0].strip()


def _with_seed(scenario: Scenario, seed: int) -> Scenario:
    """The scenario on another seed: what ``load_scenario(..., seed=seed)`` would give."""
    return dataclasses.replace(scenario, seed=seed, resolved={**scenario.resolved, "seed": seed})


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: its runs in table order (grid point, then repeat), nothing run yet."""

    scenario: str
    keys: tuple[str, ...]
    points: tuple[GridPoint, ...]
    repeats: int
    base_seed: int
    common_random_numbers: bool
    overrides: tuple[str, ...]
    runs: tuple[SweepRun, ...] = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return len(self.runs)


def plan_sweep(
    scenario: str | Path,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    repeats: int = 1,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    common_random_numbers: bool = True,
) -> SweepPlan:
    """Every run of a sweep, validated, with its seed; nothing runs.

    Each grid point is loaded with ``[*overrides, *point.sets]`` through the scenario loader, so
    a bad key or value raises its ``ScenarioError`` (file, line, key) before any work starts.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ScenarioError(f"repeats must be an integer >= 1, got {repeats!r}")
    points = expand_grid(grid)
    overrides = list(overrides)
    clash = sorted({_override_key(o) for o in overrides} & {k.strip() for k in grid or {}})
    if clash:
        raise ScenarioError(
            f"{', '.join(clash)} is both overridden (--set) and swept (--grid): keep one"
        )
    if any(_override_key(o) == "seed" for o in overrides) and seed is not None:
        raise ScenarioError("give the base seed once: --seed or --set seed=, not both")
    scenarios = [load_scenario(scenario, [*overrides, *p.sets], seed=seed) for p in points]
    base = scenarios[0].seed
    seeds = derive_seeds(base, points, repeats, common_random_numbers=common_random_numbers)
    runs: list[SweepRun] = []
    for point, loaded, point_seeds in zip(points, scenarios, seeds, strict=True):
        for repeat, run_seed in enumerate(point_seeds):
            runs.append(
                SweepRun(
                    index=len(runs),
                    point=point.index,
                    repeat=repeat,
                    seed=run_seed,
                    values=point.values,
                    sets=point.sets,
                    scenario=_with_seed(loaded, run_seed),
                )
            )
    return SweepPlan(
        scenario=scenarios[0].name,
        keys=tuple(k.strip() for k in grid or {}),
        points=tuple(points),
        repeats=repeats,
        base_seed=base,
        common_random_numbers=common_random_numbers,
        overrides=tuple(overrides),
        runs=tuple(runs),
    )


# -- one run, on a worker ----------------------------------------------------------------------


def run_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A run's table columns from its ``summary.json`` dict: :data:`CORE_METRICS` (the names of
    ``labkit.compare.headline`` where it has them) plus its optional-section figures."""
    lat = summary["latency_ms"]
    requests = summary["requests"]
    per_worker = summary.get("per_worker") or {}
    registry = summary.get("registry") or {}
    row: dict[str, Any] = {
        "throughput_rps": summary["throughput_rps"],
        "offered_rps": summary.get("offered_rps"),
        "error_rate": summary["error_rate"],
        "mean_ms": lat["mean"],
        "p50_ms": lat["p50"],
        "p90_ms": lat["p90"],
        "p95_ms": lat["p95"],
        "p99_ms": lat["p99"],
        "p999_ms": lat["p999"],
        "max_ms": lat["max"],
        "offered": requests["offered"],
        "completed": requests["completed"],
        "failed": requests["failed"],
        "rejected": requests["rejected"],
        "timed_out": requests["timed_out"],
        "retries": summary.get("retries"),
        "misroutes": registry.get("misroutes"),
        "sent_to_unreachable": registry.get("sent_to_unreachable"),
        "utilization_mean": (per_worker.get("utilization") or {}).get("mean"),
        "imbalance": per_worker.get("imbalance"),
    }
    row.update(headline(dict(summary)))  # the same names and values as labkit compare
    return row


def _error_text(exc: BaseException) -> str:
    """``Type: message (at file.py:123 in function)``: enough to find it, short enough for a
    table cell."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _where() -> str:
    """The Dask worker running this (its address), or ``local``."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _execute(scenario: Scenario, runner: Runner | None, run_dir: str | None) -> dict[str, Any]:
    """Run one scenario and return its metrics (or its error). Runs on a worker: everything it
    returns travels back through the scheduler, so it is kept small."""
    started = time.perf_counter()
    try:
        if runner is None:
            from labkit.sim import simulate

            runner = simulate
        results = runner(scenario)
        row = run_metrics(results.summary)
        if run_dir is not None:
            results.write(run_dir, report=False)
            row["run_dir"] = run_dir
        row.update(status="ok", error="")
    except Exception as exc:  # recorded in the table; the sweep goes on
        row = {"status": "failed", "error": _error_text(exc)}
    row["wall_s"] = round(time.perf_counter() - started, 3)
    row["worker"] = _where()
    return row


# -- running -----------------------------------------------------------------------------------


class SweepProgress:
    """A text progress bar for sweeps, on stderr by default: redrawn in place on a terminal,
    a line per 10 % in a log or notebook. Usable as ``sweep(progress=...)``."""

    def __init__(self, label: str = "sweep", *, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.failed = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._open = False  # a bar line is on the terminal, not yet ended

    def __call__(self, done: int, total: int, row: Mapping[str, Any]) -> None:
        if row.get("status") == "failed":
            self.failed += 1
        decile = 10 * done // max(total, 1)
        if not self._tty and decile == self._last_decile and done < total:
            return
        self._last_decile = decile
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = time.perf_counter() - self.started
        failed = f", {self.failed} failed" if self.failed else ""
        line = f"{self.label} [{bar}] {done}/{total} runs{failed}  {elapsed:5.1f}s"
        if self._tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self._open = done < total
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line above the bar (a failed run, say)."""
        self.stream.write(("\n" if self._open else "") + message + "\n")
        self._open = False
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


@contextlib.contextmanager
def _cluster(scheduler: str | Any | None, workers: int | None, runs: int) -> Iterator[Client]:
    """A Dask client: the caller's (left open), one connected to ``scheduler`` (the client is
    closed, the cluster left running), or a private ``LocalCluster`` closed afterwards."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    # a cluster object (LocalCluster, a dask-jobqueue or Kubernetes cluster, ...): its scheduler
    scheduler = getattr(scheduler, "scheduler_address", scheduler)
    if scheduler is not None:
        try:
            client = Client(str(scheduler), timeout="10s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"cannot reach a Dask scheduler at {scheduler}: {exc}") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                raise SweepError(f"the Dask scheduler at {scheduler} has no workers") from None
            yield client
        return
    from dask.system import CPU_COUNT

    if workers is not None and workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    n = min(workers or CPU_COUNT, max(runs, 1))
    # one single-threaded process per core: simulations are CPU-bound Python (the GIL), and
    # processes also keep one run's memory from lingering in another's
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _failed(exc: BaseException | None, why: str) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": _error_text(exc) if exc is not None else why,
        "wall_s": math.nan,
        "worker": "",
    }


def _run_on_dask(
    client: Client,
    runs: Sequence[SweepRun],
    runner: Runner | None,
    run_dirs: Sequence[str | None],
    report: Callable[[SweepRun, dict[str, Any]], None],
) -> list[dict[str, Any]]:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            _execute, run.scenario, runner, run_dir, key=f"labkit-sweep-{token}-{run.index:05d}"
        )
        for run, run_dir in zip(runs, run_dirs, strict=True)
    ]
    by_key = {f.key: run for f, run in zip(futures, runs, strict=True)}
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    try:
        for future in as_completed(futures, loop=client.loop):
            run = by_key[future.key]
            if future.status == "finished":
                try:
                    row = future.result()
                except Exception as exc:  # could not be fetched or unpickled
                    row = _failed(exc, "")
            elif future.status == "cancelled":
                row = _failed(None, "cancelled: the cluster dropped the task")
            else:  # "error": the worker died running it (KilledWorker) or could not load it
                row = _failed(future.exception(), "")
            future.release()
            rows[run.index] = row
            report(run, row)
    finally:
        client.cancel([f for f in futures if not f.done()])  # interrupted: leave nothing queued
    return [r if r is not None else _failed(None, "no result") for r in rows]


def _progress_callback(progress: bool | ProgressCallback | None, label: str) -> Any:
    if progress is True:
        return SweepProgress(label)
    if progress is False or progress is None:
        return None
    return progress


def sweep(
    scenario: str | Path,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    repeats: int = 1,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    common_random_numbers: bool = True,
    scheduler: str | Client | Any | None = None,
    workers: int | None = None,
    keep_records: bool = False,
    out: str | Path | None = None,
    report: bool = True,
    progress: bool | ProgressCallback | None = None,
    runner: Runner | None = None,
) -> pd.DataFrame:
    """Run every grid point ``repeats`` times and return the tidy table (one row per run).

    - ``grid`` maps dotted scenario keys to the values to try (strings are YAML text, as in
      ``--set``); an empty grid repeats the scenario as it is. ``overrides`` are ``--set``
      overrides for every run; ``seed`` replaces the scenario's seed as the base seed;
      ``common_random_numbers`` chooses the seeding (see the module docstring).
    - ``scheduler``: None starts a private ``LocalCluster`` (``workers`` single-threaded
      processes, default one per core), closed afterwards; an address (``tcp://host:8786``) or a
      cluster object (``LocalCluster``, ...) is used and left running; a ``distributed.Client``
      is used as is; ``"serial"`` runs here, one run after another (for debugging).
    - ``out`` writes ``sweep.parquet``, ``sweep_summary.csv``, ``sweep.json`` and, with
      ``report``, the plots and ``report.html`` (:func:`write_sweep`); ``keep_records`` also
      keeps every run's records under ``out/runs/p<point>-r<repeat>/``.
    - ``progress``: True draws a bar on stderr; a callable gets ``(done, total, row)`` after
      every run. ``runner`` replaces ``labkit.sim.simulate`` (workers must be able to unpickle
      it).

    Columns: the grid keys, ``point``, ``repeat``, ``seed``, ``status`` (ok/failed), ``error``,
    :data:`CORE_METRICS` and the optional-section metrics, ``wall_s``, ``worker`` (and
    ``run_dir`` with ``keep_records``); ``frame.attrs["sweep"]`` describes the sweep. A run that
    fails is a row with ``status="failed"`` and NaN metrics; the others go on.
    """
    plan = plan_sweep(
        scenario,
        grid,
        repeats=repeats,
        overrides=overrides,
        seed=seed,
        common_random_numbers=common_random_numbers,
    )
    runs, keys, name = plan.runs, list(plan.keys), plan.scenario
    if keep_records and out is None:
        raise SweepError("keep_records needs out=: workers write each run's records there")
    run_dirs: list[str | None] = [
        str(Path(out).resolve() / "runs" / run.label) if keep_records and out else None
        for run in runs
    ]
    callback = _progress_callback(progress, f"sweep {name}")
    done = 0

    def finished(run: SweepRun, row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, len(runs), _row(run, row))

    started = time.perf_counter()
    where, n_workers = "serial", 1
    try:
        if scheduler == "serial":
            rows = []
            for run, run_dir in zip(runs, run_dirs, strict=True):
                rows.append(_execute(run.scenario, runner, run_dir))
                finished(run, rows[-1])
        else:
            with _cluster(scheduler, workers, len(runs)) as client:
                where = str(client.scheduler.address) if client.scheduler else "?"
                n_workers = len(client.scheduler_info().get("workers", {}))
                rows = _run_on_dask(client, runs, runner, run_dirs, finished)
    finally:
        if isinstance(callback, SweepProgress):
            callback.close()
    frame = _frame(runs, rows, keys)
    frame.attrs["sweep"] = {
        "scenario": name,
        "source": str(scenario),
        "grid": {k: [p.split("=", 1)[1] for p in dict.fromkeys(_sets_of(plan, k))] for k in keys},
        "repeats": repeats,
        "overrides": list(plan.overrides),
        "base_seed": plan.base_seed,
        "common_random_numbers": common_random_numbers,
        "runs": len(runs),
        "failed": int((frame["status"] == "failed").sum()),
        "scheduler": where,
        "workers": n_workers,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    if out is not None:
        write_sweep(frame, out, report=report)
    return frame


def _sets_of(plan: SweepPlan, key: str) -> list[str]:
    """The ``--set`` texts of ``key`` over the grid, in grid order."""
    i = plan.keys.index(key)
    return [p.sets[i] for p in plan.points]


def _row(run: SweepRun, result: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict(run.values)
    row.update(point=run.point, repeat=run.repeat, seed=run.seed)
    row.update(result)
    return row


def _frame(
    runs: Sequence[SweepRun], rows: Sequence[dict[str, Any]], keys: list[str]
) -> pd.DataFrame:
    """The tidy table: grid keys, run identity, metrics, run facts, in a fixed column order."""
    metrics = list(CORE_METRICS)
    for row in rows:
        metrics += [
            k for k in row if k not in metrics and k not in (*RUN_COLUMNS, *RUN_FACTS, "run_dir")
        ]
    columns = [*keys, *RUN_COLUMNS, *metrics, *RUN_FACTS]
    if any("run_dir" in row for row in rows):
        columns.append("run_dir")
    records = [_row(run, row) for run, row in zip(runs, rows, strict=True)]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for name in [*metrics, "wall_s"]:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    for name in _COUNTS:
        with contextlib.suppress(TypeError, ValueError):
            frame[name] = frame[name].astype("Int64")  # counts stay integers beside failed rows
    frame["seed"] = frame["seed"].astype("int64")
    frame["error"] = frame["error"].fillna("").astype(str)
    frame["worker"] = frame["worker"].fillna("").astype(str)
    frame.attrs["grid"] = keys
    return frame


# -- tables ------------------------------------------------------------------------------------


def grid_keys(frame: pd.DataFrame) -> list[str]:
    """The grid's columns of a sweep table (from ``attrs``, else the columns before ``point``)."""
    keys = frame.attrs.get("grid")
    if keys is None:
        columns = list(frame.columns)
        keys = columns[: columns.index("point")] if "point" in columns else []
    return [k for k in keys if k in frame.columns]


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric metric columns of a sweep table (not grid keys, run identity or run facts)."""
    skip = {*grid_keys(frame), *RUN_COLUMNS, *RUN_FACTS, "run_dir"}
    return [
        c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c].dtype)
    ]


def aggregate(
    frame: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per grid point: ``runs``, ``ok``, ``failed``, and for every metric ``<m>_mean`` and
    ``<m>_ci``, the half-width of the Student-t ``confidence`` interval of the mean over the
    point's successful repeats (NaN with fewer than two).

    Repeats are independent runs on different seeds, so the t interval is exact for normally
    distributed run-level figures and a good approximation for means of a few repeats of
    anything else. With common random numbers the intervals of two grid points overlap more than
    their *difference* varies: compare points repeat by repeat for the sharper answer.
    """
    from labkit.stats import student_t_critical

    keys = list(keys) if keys is not None else grid_keys(frame)
    metrics = list(metrics) if metrics is not None else metric_columns(frame)
    ok = frame["status"].eq("ok") if "status" in frame else pd.Series(True, index=frame.index)
    groups: Any = frame.groupby(keys, sort=False, dropna=False) if keys else [((), frame)]
    rows = []
    for values, group in groups:
        row: dict[str, Any] = dict(
            zip(keys, values if isinstance(values, tuple) else (values,), strict=True)
        )
        good = group[ok.loc[group.index]]
        row.update(runs=len(group), ok=len(good), failed=len(group) - len(good))
        for metric in metrics:
            data = pd.to_numeric(good[metric], errors="coerce").to_numpy(dtype=np.float64)
            data = data[np.isfinite(data)]
            n = len(data)
            row[f"{metric}_mean"] = float(data.mean()) if n else math.nan
            row[f"{metric}_ci"] = (
                student_t_critical(confidence, n - 1) * float(data.std(ddof=1)) / math.sqrt(n)
                if n > 1
                else math.nan
            )
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs = {"grid": keys, "confidence": confidence}
    return out


def paired_difference(
    frame: pd.DataFrame,
    key: str,
    a: Any,
    b: Any,
    metric: str = "p99_ms",
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """``metric`` at ``key=a`` minus at ``key=b``, repeat by repeat, per combination of the other
    grid keys: each side's mean and CI half-width, and the mean and CI of the difference.

    With common random numbers (the default) repeat *r* of ``a`` and of ``b`` ran on the same
    seed, so the traffic's luck moves both together and cancels in the difference: its interval
    is much narrower than either side's, and when it excludes 0, ``a`` and ``b`` differ on this
    scenario even where their own intervals overlap. Repeats where either run failed are left
    out. With independent seeds the difference is still unbiased, only without that gain.
    """
    from labkit.stats import student_t_critical

    others = [k for k in grid_keys(frame) if k != key]
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    sides = {
        side: ok[ok[key] == value].set_index([*others, "repeat"])[metric].astype(float)
        for side, value in (("a", a), ("b", b))
    }
    if sides["a"].empty or sides["b"].empty:
        missing = a if sides["a"].empty else b
        raise ValueError(f"no successful run has {key}={missing!r}")
    pairs = pd.concat(sides, axis=1, join="inner").dropna()

    def mean_ci(values: pd.Series) -> tuple[float, float]:
        n = len(values)
        if n == 0:
            return math.nan, math.nan
        half = (
            student_t_critical(confidence, n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
            if n > 1
            else math.nan
        )
        return float(values.mean()), half

    groups: Any = pairs.groupby(level=others, sort=False) if others else [((), pairs)]
    rows = []
    for values, group in groups:
        row: dict[str, Any] = dict(
            zip(others, values if isinstance(values, tuple) else (values,), strict=True)
        )
        row["pairs"] = len(group)
        difference = group["a"] - group["b"]
        for name, series in ((a, group["a"]), (b, group["b"]), (f"{a}-{b}", difference)):
            row[f"{name}_mean"], row[f"{name}_ci"] = mean_ci(series)
        rows.append(row)
    return pd.DataFrame(rows)


def write_sweep(
    frame: pd.DataFrame, out: str | Path, *, report: bool = True, confidence: float = 0.95
) -> dict[str, Path]:
    """Write ``sweep.parquet`` (the tidy table), ``sweep_summary.csv`` (:func:`aggregate`),
    ``sweep.json`` (what was swept, the base seed, where it ran) and, with ``report``, the sweep
    plots and ``report.html`` (:func:`labkit.sweep_plots.write_sweep_report`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": out / "sweep.parquet",
        "summary": out / "sweep_summary.csv",
        "meta": out / "sweep.json",
    }
    frame.to_parquet(paths["table"], index=False)
    summary = aggregate(frame, confidence=confidence)
    summary.to_csv(paths["summary"], index=False)
    meta = dict(frame.attrs.get("sweep") or {})
    meta["confidence"] = confidence
    paths["meta"].write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if report:
        from labkit.sweep_plots import write_sweep_report

        paths.update(write_sweep_report(frame, out, confidence=confidence))
    return paths
