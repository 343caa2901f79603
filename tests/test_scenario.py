"""Scenario files: every shipped one validates; every bad one fails with one precise error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labkit.errors import ScenarioError
from labkit.scenario import load_scenario

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))

GOOD = """\
name: t
seed: 3
duration_s: 10
warmup_s: 1
workers:
  count: 4
  service_time: {dist: lognormal, median_ms: 40, p99_ms: 250}
workload:
  arrival: {process: poisson, rate_rps: 100}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_validate(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name
    assert scenario.to_dict()["workers"]["count"] == scenario.workers.count


def test_there_are_several_shipped_scenarios() -> None:
    assert len(SHIPPED) >= 4
    assert any(p.name == "quickstart.yaml" for p in SHIPPED)


def test_defaults_are_filled_in_and_echoed(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    d = sc.to_dict()
    assert d["gateway"]["retries"]["max_attempts"] == 1  # no retries unless asked
    assert d["gateway"]["rate_limit"] is None
    assert d["network"]["latency"] is None
    assert d["registry"]["consistency"] == "eventual"
    assert d["workers"]["service_time"] == {"dist": "lognormal", "median_ms": 40.0, "p99_ms": 250.0}


@pytest.mark.parametrize(
    ("patch", "path", "line", "fragment"),
    [
        ("  concurency: 4\n", "workers.concurency", 8, "did you mean 'concurrency'"),
        ("  count: many\n", "workers.count", None, "must be an integer"),
        ("  queue_limit: -1\n", "workers.queue_limit", 8, "must be >= 0"),
        ("  speed: {dist: gaussian}\n", "workers.speed.dist", None, "exponential"),
    ],
)
def test_worker_errors_name_file_line_and_key(
    tmp_path: Path, patch: str, path: str, line: int | None, fragment: str
) -> None:
    text = (
        GOOD.replace("workload:\n", patch + "workload:\n")
        if "count" not in patch
        else GOOD.replace("  count: 4\n", patch)
    )
    file = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(file)
    err = info.value
    assert err.path == path
    assert fragment in str(err)
    assert str(file) in str(err)
    if line is not None:
        assert err.line == line
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("- a\n- b\n", "mapping"),
        ("name: t\nduration_s: [1\n", "not valid YAML"),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5}}\nbogus: 1\n",
            "unknown key 'bogus'",
        ),
        ("name: t\nduration_s: 10\n", "workload.arrival.rate_rps: is required"),
        (
            "name: t\nduration_s: 10\nwarmup_s: 10\nworkload: {arrival: {rate_rps: 5}}\n",
            "shorter than duration_s",
        ),
        ("name: t\nduration_s: 10\nname: u\n", "duplicate key"),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {process: closed}}\n",
            "clients: is required",
        ),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5, clients: 3}}\n",
            "unknown key 'clients'",
        ),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5}}\nbalancer: {strategy: fastest}\n",
            "choose one of",
        ),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5}}\nbalancer: {weights: {cpu: -1}}\n",
            "balancer.weights.cpu",
        ),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5}}\nregistry: {consistency: linearizable}\n",
            "strong, eventual",
        ),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5}, target_types: {ghost: 1}}\n",
            "no worker hosts agent type 'ghost'",
        ),
        (
            "name: t\nduration_s: 10\nworkload: {arrival: {rate_rps: 5}}\nsubscriptions: [{agent_type: agent}]\n",
            "exactly one of topic_type",
        ),
        ("name: t\nduration_s: true\n", "must be a number, got a boolean"),
        (
            "name: t\nduration_s: 10\nworkers: {service_time: {dist: empirical, csv: nope.csv}}\nworkload: {arrival: {rate_rps: 5}}\n",
            "nope.csv",
        ),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(file)
    message = str(info.value)
    assert fragment in message
    assert message.startswith(str(file))
    assert "\n" not in message


def test_overrides_set_nested_keys_and_typos_are_unknown_keys(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD)
    sc = load_scenario(
        file,
        [
            "balancer.strategy=p2c",
            "workload.arrival.rate_rps=1800",
            "network.latency={dist: constant, value_ms: 1}",
        ],
    )
    assert sc.balancer.strategy == "p2c"
    assert sc.workload.arrival.rate_rps == 1800
    assert sc.network.latency is not None and sc.network.latency.mean == 1
    with pytest.raises(ScenarioError, match=r"balancer\.strategi: unknown key"):
        load_scenario(file, ["balancer.strategi=p2c"])
    with pytest.raises(ScenarioError, match="expected KEY=VALUE"):
        load_scenario(file, ["balancer.strategy"])
    with pytest.raises(ScenarioError, match="is a value, not a section"):
        load_scenario(file, ["seed.x=1"])


def test_seed_argument_overrides_the_file(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path, GOOD), seed=11).seed == 11


def test_empirical_service_time_from_csv_next_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "lat.csv").write_text("latency_ms\n10\n20\n30\n")
    text = GOOD.replace(
        "service_time: {dist: lognormal, median_ms: 40, p99_ms: 250}",
        "service_time: {dist: empirical, csv: lat.csv}",
    )
    sc = load_scenario(write(tmp_path, text))
    assert sc.workers.service_time.mean == pytest.approx(20)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_scenario_runs(path: Path) -> None:
    from labkit.sim import simulate

    text = path.read_text()
    timed = any(k in text for k in ("faults:", "node_failures:", "invalidations:"))
    # timed events need the run's full length (tests/test_sim_failures.py and test_sim_data.py
    # check their effects at full rate): here a light load is enough to show the file runs
    overrides = ["duration_s=3", "warmup_s=1"]
    if timed:
        overrides = ["workload.arrival.rate_rps=100"] if "rate_rps:" in text else []
    results = simulate(load_scenario(path, overrides))
    req = results.summary["requests"]
    assert req["offered"] > 0
    assert req["offered"] == req["completed"] + req["failed"] + req["rejected"] + req["timed_out"]
