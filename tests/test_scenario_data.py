"""Scenario sections about data: ``state``, ``cache``, ``batching`` and the ``watch`` registry
consistency. Good values resolve to the core's config objects with documented defaults; bad ones
fail with one ``ScenarioError`` naming the key path."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from labkit.core.batching import AdaptiveBatching, BatchingConfig
from labkit.core.cache import CacheConfig, L1Config
from labkit.core.state import StateConfig
from labkit.distributions import parse_distribution
from labkit.errors import ScenarioError
from labkit.scenario import Scenario, load_scenario, scenario_from_dict
from labkit.scenario.consistency import CacheNodeFailure, Invalidation

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.yaml"))
EXP_1MS = parse_distribution({"dist": "exponential", "mean_ms": 1})


def base(**extra: Any) -> dict[str, Any]:
    """A minimal valid scenario: 10 workers, 60 s, plus ``extra`` top-level sections."""
    return {
        "name": "t",
        "seed": 1,
        "duration_s": 60,
        "workers": {"count": 10},
        "workload": {"arrival": {"rate_rps": 100}},
        **extra,
    }


def parse(overrides: list[str] | None = None, **extra: Any) -> Scenario:
    return scenario_from_dict(base(**extra), overrides)


def error(**extra: Any) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(**extra)
    assert "\n" not in str(info.value)
    return info.value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- shipped scenarios ----------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_scenario_still_loads(path: Path) -> None:
    sc = load_scenario(path)
    d = sc.to_dict()
    assert {"state", "cache", "batching"} <= set(d)
    assert (d["state"] is None) == (sc.state is None)
    assert (d["cache"] is None) == (sc.cache is None)
    assert (d["batching"] is None) == (sc.batching is None)
    assert d["registry"]["consistency"] == sc.registry.consistency


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_resolved_data_sections_parse_back_to_the_same_config(path: Path) -> None:
    """The echo in summary.json is itself a valid scenario meaning the same thing."""
    sc = load_scenario(path)
    again = scenario_from_dict(copy.deepcopy(sc.to_dict()))
    assert again.state == sc.state
    assert again.cache == sc.cache
    assert again.batching == sc.batching
    assert again.registry == sc.registry


def test_shipped_batching_scenarios() -> None:
    fixed = load_scenario(SCENARIOS / "batching.yaml")
    assert fixed.batching == BatchingConfig(
        max_batch=8, max_delay_s=0.002, batch_cost_s=0.002, message_cost_s=0.0
    )
    aimd = load_scenario(SCENARIOS / "batching_adaptive.yaml")
    assert aimd.batching is not None and aimd.batching.max_batch == 1
    assert aimd.batching.adaptive == AdaptiveBatching(
        target_p99_s=0.03, interval_s=1.0, increase=1, decrease=0.5, max_batch=32
    )
    # the scenario's own "Try:" line
    off = load_scenario(
        SCENARIOS / "batching_adaptive.yaml",
        ["batching.adaptive=null", "batching.max_batch=1"],
    )
    assert off.batching is not None and off.batching.adaptive is None


def test_shipped_cache_failure_scenario() -> None:
    sc = load_scenario(SCENARIOS / "cache_failure.yaml")
    assert sc.cache is not None
    assert sc.cache.config.nodes == 4 and sc.cache.config.replication == 1
    assert sc.cache.config.l1 == L1Config(capacity=500, ttl_s=2.0)
    assert sc.cache.failures == (CacheNodeFailure("c-1", 30.0, 20.0),)
    assert sc.cache.invalidations == (Invalidation(70.0, "k1*"),)
    no_l1 = load_scenario(SCENARIOS / "cache_failure.yaml", ["cache.l1=null"])
    assert no_l1.cache is not None and no_l1.cache.config.l1 is None


@pytest.mark.parametrize("consistency", ["eventual", "watch", "strong"])
def test_shipped_registry_consistency_scenario_under_each_model(consistency: str) -> None:
    sc = load_scenario(
        SCENARIOS / "registry_consistency.yaml", [f"registry.consistency={consistency}"]
    )
    assert sc.registry.consistency == consistency
    # the file gives watch_delay explicitly, so every variant of `labkit compare` carries it
    assert sc.registry.watch_delay == parse_distribution({"dist": "exponential", "mean_ms": 20})


# --- state ----------------------------------------------------------------------------------


def test_state_is_off_by_default() -> None:
    sc = parse()
    assert sc.state is None
    assert sc.cache is None
    assert sc.batching is None
    d = sc.to_dict()
    assert d["state"] is None and d["cache"] is None and d["batching"] is None


def test_empty_state_section_gets_eventual_defaults() -> None:
    sc = parse(state={})
    assert sc.state is not None
    assert sc.state.config == StateConfig(model="eventual", n=3, r=1, w=1)
    for delay in (
        sc.state.write_delay,
        sc.state.ack_delay,
        sc.state.read_delay,
        sc.state.response_delay,
    ):
        assert delay == EXP_1MS


@pytest.mark.parametrize(
    ("state", "r", "w"),
    [
        ({"model": "strong"}, 2, 2),
        ({"model": "strong", "n": 5}, 3, 3),
        ({"model": "strong", "n": 4}, 3, 3),
        ({"model": "strong", "n": 1}, 1, 1),
        ({"model": "strong", "n": 4, "r": 1, "w": 4}, 1, 4),
        ({"model": "strong", "r": 3}, 3, 2),
        ({"model": "session"}, 1, 1),
        ({"model": "eventual", "n": 5}, 1, 1),
        ({"model": "eventual", "n": 5, "r": 2, "w": 2}, 2, 2),  # partial quorums are fine
    ],
)
def test_quorum_defaults_follow_the_model(state: dict[str, Any], r: int, w: int) -> None:
    sc = parse(state=state)
    assert sc.state is not None
    assert (sc.state.config.r, sc.state.config.w) == (r, w)
    assert sc.state.config.model == state["model"]


def test_state_with_every_key() -> None:
    state = {
        "model": "strong",
        "n": 5,
        "r": 2,
        "w": 4,
        "conflict": "merge",
        "fields": 3,
        "write_fanout": "quorum",
        "read_fraction": 0.5,
        "write_fraction": 0.25,
        "max_versions": 10,
        "delays": {
            "write": {"dist": "constant", "value_ms": 2},
            "ack": {"dist": "constant", "value_ms": 3},
            "read": {"dist": "exponential", "mean_ms": 4},
            "response": {"dist": "exponential", "mean_ms": 5},
        },
    }
    sc = parse(state=state)
    assert sc.state is not None
    assert sc.state.config == StateConfig(
        model="strong",
        n=5,
        r=2,
        w=4,
        conflict="merge",
        fields=3,
        write_fanout="quorum",
        read_fraction=0.5,
        write_fraction=0.25,
        max_versions=10,
    )
    assert sc.state.write_delay == parse_distribution({"dist": "constant", "value_ms": 2})
    assert sc.state.response_delay == parse_distribution({"dist": "exponential", "mean_ms": 5})


@pytest.mark.parametrize(
    ("r", "w", "n"), [(1, 1, 3), (1, 2, 3), (2, 1, 3), (2, 2, 4), (1, 3, 4), (2, 3, 5)]
)
def test_strong_needs_overlapping_quorums(r: int, w: int, n: int) -> None:
    err = error(state={"model": "strong", "n": n, "r": r, "w": w})
    assert err.path == "state.r"
    assert "r + w > n" in err.message
    assert f"r={r}, w={w}, n={n}" in err.message


@pytest.mark.parametrize(
    ("state", "path", "fragment"),
    [
        ({"r": 4}, "state.r", "must be <= 3"),
        ({"w": 4}, "state.w", "must be <= 3"),
        ({"n": 2, "r": 3}, "state.r", "must be <= 2"),
        ({"r": 0}, "state.r", "must be >= 1"),
        ({"n": 0}, "state.n", "must be >= 1"),
        ({"model": "linearizable"}, "state.model", "strong, eventual, session"),
        ({"conflict": "first_wins"}, "state.conflict", "last_write_wins"),
        ({"write_fanout": "some"}, "state.write_fanout", "quorum"),
        ({"read_fraction": 1.5}, "state.read_fraction", "must be <= 1"),
        ({"max_versions": 1}, "state.max_versions", "must be >= 2"),
        ({"n": 2.5}, "state.n", "integer"),
        ({"delays": {"write": {"dist": "gaussian"}}}, "state.delays.write.dist", "exponential"),
    ],
)
def test_state_value_errors_name_the_key(state: dict[str, Any], path: str, fragment: str) -> None:
    err = error(state=state)
    assert err.path == path
    assert fragment in err.message


# --- unknown keys anywhere --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"state": {"quorum": 2}}, "state.quorum"),
        ({"state": {"delays": {"writ": {"dist": "constant", "value_ms": 1}}}}, "state.delays.writ"),
        ({"cache": {"node": 3}}, "cache.node"),
        ({"cache": {"l1": {"size": 10}}}, "cache.l1.size"),
        (
            {"cache": {"node_failures": [{"node": "c-0", "at_s": 1, "for_s": 2}]}},
            "cache.node_failures.0.for_s",
        ),
        (
            {"cache": {"invalidations": [{"at_s": 1, "pattern": "k*", "x": 1}]}},
            "cache.invalidations.0.x",
        ),
        ({"batching": {"max_size": 4}}, "batching.max_size"),
        ({"batching": {"adaptive": {"target_p99_ms": 10, "incr": 2}}}, "batching.adaptive.incr"),
        (
            {"registry": {"watch_dealy": {"dist": "constant", "value_ms": 1}}},
            "registry.watch_dealy",
        ),
    ],
)
def test_unknown_keys_are_errors_naming_the_path(extra: dict[str, Any], path: str) -> None:
    err = error(**extra)
    assert err.path == path
    assert "unknown key" in err.message


def test_unknown_key_suggests_the_near_miss() -> None:
    err = error(state={"delays": {"writ": {"dist": "constant", "value_ms": 1}}})
    assert "did you mean 'write'" in err.message
    err = error(batching={"adaptive": {"target_p99_ms": 10, "incr": 2}})
    assert "did you mean 'increase'" in err.message


def test_unknown_key_from_a_file_names_its_line(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        """\
        name: t
        duration_s: 60
        workload:
          arrival: {process: poisson, rate_rps: 100}
        cache:
          nodes: 3
          l1:
            capacity: 10
            ttl: 2
        """,
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(file)
    assert info.value.path == "cache.l1.ttl"
    assert info.value.line == 9
    assert str(file) in str(info.value)


# --- cache ----------------------------------------------------------------------------------


def test_empty_cache_section_gets_defaults() -> None:
    sc = parse(cache={})
    assert sc.cache is not None
    assert sc.cache.config == CacheConfig(nodes=4, replication=2, l1=None)
    assert sc.cache.failures == () and sc.cache.invalidations == ()
    assert sc.cache.node_rtt == parse_distribution({"dist": "exponential", "mean_ms": 0.5})
    assert sc.cache.store_read.mean == 20.0
    assert sc.cache.store_write.mean == 30.0


def test_cache_replication_defaults_to_at_most_the_node_count() -> None:
    sc = parse(cache={"nodes": 1})
    assert sc.cache is not None and sc.cache.config.replication == 1


def test_cache_l1_defaults() -> None:
    sc = parse(cache={"l1": {}})
    assert sc.cache is not None
    assert sc.cache.config.l1 == L1Config(capacity=1000, ttl_s=5.0, eviction="lru")


@pytest.mark.parametrize(
    ("cache", "path", "fragment"),
    [
        ({"nodes": 3, "replication": 4}, "cache.replication", "must be <= 3"),
        ({"replication": 5}, "cache.replication", "must be <= 4"),
        ({"nodes": 0}, "cache.nodes", "must be >= 1"),
        ({"read_repair": "yes"}, "cache.read_repair", "true or false"),
        ({"read_repair": 1}, "cache.read_repair", "true or false"),
        ({"ttl_s": 0}, "cache.ttl_s", "must be > 0"),
        ({"eviction": "random"}, "cache.eviction", "lru"),
        ({"l1": {"ttl_s": 0}}, "cache.l1.ttl_s", "must be > 0"),
        ({"l1": {"capacity": 0}}, "cache.l1.capacity", "must be >= 1"),
        ({"node_failures": {"node": "c-0"}}, "cache.node_failures", "list"),
        ({"invalidations": "k*"}, "cache.invalidations", "list"),
    ],
)
def test_cache_value_errors_name_the_key(cache: dict[str, Any], path: str, fragment: str) -> None:
    err = error(cache=cache)
    assert err.path == path
    assert fragment in err.message


def test_read_repair_false_is_kept() -> None:
    sc = parse(cache={"read_repair": False})
    assert sc.cache is not None and sc.cache.config.read_repair is False
    assert sc.to_dict()["cache"]["read_repair"] is False


def test_cache_node_failures_and_invalidations() -> None:
    sc = parse(
        cache={
            "nodes": 3,
            "node_failures": [
                {"node": "c-2", "at_s": 10, "duration_s": 5},
                {"node": "c-2", "at_s": 15},  # back-to-back: it came back at 15
                {"node": "c-0", "at_s": 0, "duration_s": 100},
            ],
            "invalidations": [{"at_s": 0, "pattern": "k1*"}, {"at_s": 59.5, "pattern": "*"}],
        }
    )
    assert sc.cache is not None
    assert sc.cache.failures == (
        CacheNodeFailure("c-2", 10.0, 5.0),
        CacheNodeFailure("c-2", 15.0, None),
        CacheNodeFailure("c-0", 0.0, 100.0),
    )
    assert sc.cache.invalidations == (Invalidation(0.0, "k1*"), Invalidation(59.5, "*"))
    d = sc.to_dict()["cache"]
    assert d["node_failures"] == [
        {"node": "c-2", "at_s": 10.0, "duration_s": 5.0},
        {"node": "c-2", "at_s": 15.0, "duration_s": None},
        {"node": "c-0", "at_s": 0.0, "duration_s": 100.0},
    ]
    assert d["invalidations"] == [{"at_s": 0.0, "pattern": "k1*"}, {"at_s": 59.5, "pattern": "*"}]


def test_cache_failure_of_an_unknown_node_lists_the_choices() -> None:
    err = error(cache={"nodes": 3, "node_failures": [{"node": "c-3", "at_s": 1}]})
    assert err.path == "cache.node_failures.0.node"
    assert "'c-3'" in err.message
    assert "c-0, c-1, c-2" in err.message


@pytest.mark.parametrize("at_s", [60, 75.5])
def test_cache_failure_at_or_after_the_end_is_an_error(at_s: float) -> None:
    err = error(cache={"node_failures": [{"node": "c-1", "at_s": at_s}]})
    assert err.path == "cache.node_failures.0.at_s"
    assert "duration_s 60" in err.message


def test_cache_failure_just_before_the_end_is_fine() -> None:
    sc = parse(cache={"node_failures": [{"node": "c-1", "at_s": 59.9}]})
    assert sc.cache is not None and len(sc.cache.failures) == 1


@pytest.mark.parametrize(
    "failures",
    [
        [{"node": "c-1", "at_s": 10, "duration_s": 5}, {"node": "c-1", "at_s": 14}],
        [{"node": "c-1", "at_s": 30}, {"node": "c-1", "at_s": 10, "duration_s": 30}],  # unsorted
        [{"node": "c-1", "at_s": 10}, {"node": "c-1", "at_s": 20, "duration_s": 1}],  # permanent
        [{"node": "c-1", "at_s": 10, "duration_s": 5}, {"node": "c-1", "at_s": 10}],
    ],
)
def test_overlapping_failures_of_one_node_are_an_error(failures: list[dict[str, Any]]) -> None:
    err = error(cache={"node_failures": failures})
    assert err.path == "cache.node_failures"
    assert "'c-1'" in err.message and "still down" in err.message


def test_permanent_failure_of_every_node_is_an_error() -> None:
    err = error(
        cache={
            "nodes": 2,
            "node_failures": [{"node": "c-0", "at_s": 5}, {"node": "c-1", "at_s": 50}],
        }
    )
    assert err.path == "cache.node_failures"
    assert "no cache node alive" in err.message


def test_permanent_failure_of_all_but_one_node_is_fine() -> None:
    sc = parse(
        cache={
            "nodes": 3,
            "node_failures": [
                {"node": "c-0", "at_s": 5},
                {"node": "c-1", "at_s": 50},
                {"node": "c-2", "at_s": 1, "duration_s": 2},
            ],
        }
    )
    assert sc.cache is not None and len(sc.cache.failures) == 3


@pytest.mark.parametrize(
    ("item", "path", "fragment"),
    [
        ({"pattern": "k*"}, "cache.invalidations.0.at_s", "is required"),
        ({"at_s": 5}, "cache.invalidations.0.pattern", "is required"),
        ({"at_s": 60, "pattern": "k*"}, "cache.invalidations.0.at_s", "at or after the end"),
        ({"at_s": -1, "pattern": "k*"}, "cache.invalidations.0.at_s", "must be >= 0"),
        ({"at_s": 5, "pattern": ""}, "cache.invalidations.0.pattern", "non-empty string"),
    ],
)
def test_invalidation_errors(item: dict[str, Any], path: str, fragment: str) -> None:
    err = error(cache={"invalidations": [item]})
    assert err.path == path
    assert fragment in err.message


@pytest.mark.parametrize(
    ("item", "path"),
    [
        ({"at_s": 5}, "cache.node_failures.0.node"),
        ({"node": "c-0"}, "cache.node_failures.0.at_s"),
        ({"node": "c-0", "at_s": 5, "duration_s": 0}, "cache.node_failures.0.duration_s"),
    ],
)
def test_node_failure_required_keys_and_ranges(item: dict[str, Any], path: str) -> None:
    assert error(cache={"node_failures": [item]}).path == path


# --- batching -------------------------------------------------------------------------------


def test_empty_batching_section_gets_fixed_defaults() -> None:
    sc = parse(batching={})
    assert sc.batching == BatchingConfig(
        max_batch=8, max_delay_s=0.002, batch_cost_s=0.0005, message_cost_s=0.0, adaptive=None
    )


def test_batching_units_are_milliseconds_in_the_scenario_and_seconds_in_the_core() -> None:
    sc = parse(
        batching={"max_batch": 4, "max_delay_ms": 5, "batch_cost_ms": 1, "message_cost_ms": 0.25}
    )
    assert sc.batching == BatchingConfig(
        max_batch=4, max_delay_s=0.005, batch_cost_s=0.001, message_cost_s=0.00025
    )


def test_adaptive_batching_defaults() -> None:
    sc = parse(batching={"max_batch": 100, "adaptive": {"target_p99_ms": 25}})
    assert sc.batching is not None
    assert sc.batching.adaptive == AdaptiveBatching(
        target_p99_s=0.025,
        interval_s=1.0,
        increase=1,
        decrease=0.5,
        min_batch=1,
        max_batch=100,  # max(64, the starting limit)
        min_samples=20,
    )
    sc = parse(batching={"adaptive": {"target_p99_ms": 25}})
    assert sc.batching is not None and sc.batching.adaptive is not None
    assert sc.batching.adaptive.max_batch == 64


@pytest.mark.parametrize("decrease", [0, -0.5])
def test_adaptive_decrease_must_be_above_zero(decrease: float) -> None:
    err = error(batching={"adaptive": {"target_p99_ms": 10, "decrease": decrease}})
    assert err.path == "batching.adaptive.decrease"
    assert "must be > 0" in err.message


@pytest.mark.parametrize("decrease", [1, 1.5])
def test_adaptive_decrease_must_be_below_one(decrease: float) -> None:
    err = error(batching={"adaptive": {"target_p99_ms": 10, "decrease": decrease}})
    assert err.path.startswith("batching.adaptive")
    assert "decrease" in str(err)


def test_adaptive_decrease_of_one_is_reported_at_its_key_path() -> None:
    err = error(batching={"adaptive": {"target_p99_ms": 10, "decrease": 1}})
    assert err.path == "batching.adaptive.decrease"


@pytest.mark.parametrize(
    ("batching", "path", "fragment"),
    [
        ({"adaptive": {}}, "batching.adaptive.target_p99_ms", "is required"),
        ({"adaptive": {"target_p99_ms": 0}}, "batching.adaptive.target_p99_ms", "must be > 0"),
        ({"adaptive": {"target_p99_ms": 5, "increase": 0}}, "batching.adaptive.increase", ">= 1"),
        (
            {"adaptive": {"target_p99_ms": 5, "interval_s": 0}},
            "batching.adaptive.interval_s",
            "> 0",
        ),
        (
            {"adaptive": {"target_p99_ms": 5, "min_batch": 10, "max_batch": 5}},
            "batching.adaptive",
            "min_batch <= max_batch",
        ),
        ({"max_batch": 0}, "batching.max_batch", "must be >= 1"),
        ({"max_delay_ms": -1}, "batching.max_delay_ms", "must be >= 0"),
        ({"batch_cost_ms": -1}, "batching.batch_cost_ms", "must be >= 0"),
    ],
)
def test_batching_errors(batching: dict[str, Any], path: str, fragment: str) -> None:
    err = error(batching=batching)
    assert err.path == path
    assert fragment in err.message


# --- registry: watch consistency ------------------------------------------------------------


def test_watch_gets_a_default_delay() -> None:
    sc = parse(registry={"consistency": "watch"})
    assert sc.registry.consistency == "watch"
    assert sc.registry.watch_delay == parse_distribution({"dist": "exponential", "mean_ms": 20})
    assert sc.to_dict()["registry"]["watch_delay"] == {"dist": "exponential", "mean_ms": 20.0}


@pytest.mark.parametrize("consistency", ["eventual", "strong", None])
def test_other_models_have_no_watch_delay(consistency: str | None) -> None:
    registry = {} if consistency is None else {"consistency": consistency}
    sc = parse(registry=registry)
    assert sc.registry.watch_delay is None
    assert sc.to_dict()["registry"]["watch_delay"] is None


def test_watch_delay_can_be_given() -> None:
    sc = parse(
        registry={"consistency": "watch", "watch_delay": {"dist": "constant", "value_ms": 5}}
    )
    assert sc.registry.watch_delay == parse_distribution({"dist": "constant", "value_ms": 5})


def test_watch_via_override_gets_the_default_delay() -> None:
    sc = parse(["registry.consistency=watch"])
    assert sc.registry.consistency == "watch"
    assert sc.registry.watch_delay is not None and sc.registry.watch_delay.mean == 20.0


def test_bad_consistency_lists_watch() -> None:
    err = error(registry={"consistency": "linearizable"})
    assert err.path == "registry.consistency"
    assert "watch" in err.message


def test_bad_watch_delay_names_its_path() -> None:
    err = error(registry={"consistency": "watch", "watch_delay": {"dist": "gaussian"}})
    assert err.path.startswith("registry.watch_delay")


# --- overrides and the resolved echo --------------------------------------------------------


def test_override_flips_the_model_and_the_quorum_defaults_follow() -> None:
    sc = scenario_from_dict(base(), ["state.model=strong"])
    assert sc.state is not None
    assert sc.state.config.model == "strong"
    assert (sc.state.config.r, sc.state.config.w) == (2, 2)
    sc = scenario_from_dict(base(state={"model": "eventual", "n": 5}), ["state.model=strong"])
    assert sc.state is not None and (sc.state.config.r, sc.state.config.w) == (3, 3)


def test_override_to_strong_with_explicit_small_quorums_is_an_error() -> None:
    data = base(state={"model": "eventual", "r": 1, "w": 1})
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, ["state.model=strong"])
    assert info.value.path == "state.r"
    assert data["state"]["model"] == "eventual"  # overrides work on a copy


def test_overrides_reach_nested_data_sections() -> None:
    sc = scenario_from_dict(
        base(cache={"node_failures": [{"node": "c-0", "at_s": 5}]}),
        [
            "cache.nodes=6",
            "cache.l1.capacity=7",
            "cache.node_failures.0.node=c-5",
            "batching.adaptive.target_p99_ms=40",
            "state.delays.read={dist: constant, value_ms: 3}",
        ],
    )
    assert sc.cache is not None
    assert sc.cache.config.nodes == 6
    assert sc.cache.config.l1 == L1Config(capacity=7)
    assert sc.cache.failures == (CacheNodeFailure("c-5", 5.0, None),)
    assert sc.batching is not None and sc.batching.adaptive is not None
    assert sc.batching.adaptive.target_p99_s == 0.04
    assert sc.state is not None
    assert sc.state.read_delay == parse_distribution({"dist": "constant", "value_ms": 3})


def test_override_typo_is_an_unknown_key() -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(base(), ["batching.max_bach=4"])
    assert info.value.path == "batching.max_bach"


def test_resolved_dict_has_every_default_filled_in() -> None:
    sc = parse(
        state={"model": "strong"},
        cache={"l1": {"capacity": 10}},
        batching={"adaptive": {"target_p99_ms": 30}},
    )
    d = sc.to_dict()
    exp1 = {"dist": "exponential", "mean_ms": 1.0}
    assert d["state"] == {
        "model": "strong",
        "n": 3,
        "r": 2,
        "w": 2,
        "conflict": "last_write_wins",
        "fields": 8,
        "write_fanout": "all",
        "read_fraction": 1.0,
        "write_fraction": 0.5,
        "max_versions": 64,
        "delays": {"write": exp1, "ack": exp1, "read": exp1, "response": exp1},
    }
    assert d["cache"] == {
        "nodes": 4,
        "replication": 2,
        "vnodes": 100,
        "capacity": 10000,
        "eviction": "lru",
        "ttl_s": 60.0,
        "read_repair": True,
        "read_fraction": 1.0,
        "write_fraction": 0.0,
        "node_failures": [],
        "invalidations": [],
        "node_rtt": {"dist": "exponential", "mean_ms": 0.5},
        "store_read": {"dist": "exponential", "mean_ms": 20.0},
        "store_write": {"dist": "exponential", "mean_ms": 30.0},
        "l1": {"capacity": 10, "ttl_s": 5.0, "eviction": "lru"},
    }
    assert d["batching"] == {
        "max_batch": 8,
        "max_delay_ms": 2.0,
        "batch_cost_ms": 0.5,
        "message_cost_ms": 0.0,
        "adaptive": {
            "target_p99_ms": 30.0,
            "interval_s": 1.0,
            "increase": 1,
            "decrease": 0.5,
            "min_batch": 1,
            "max_batch": 64,
            "min_samples": 20,
        },
    }


def test_resolved_dict_parses_back_to_the_same_data_sections() -> None:
    sc = parse(
        state={"model": "session", "n": 5, "delays": {"ack": {"dist": "constant", "value_ms": 2}}},
        cache={
            "nodes": 3,
            "l1": {"ttl_s": 1},
            "read_repair": False,
            "node_failures": [{"node": "c-1", "at_s": 3, "duration_s": 4}],
            "invalidations": [{"at_s": 9, "pattern": "a*"}],
        },
        batching={"max_batch": 2, "adaptive": {"target_p99_ms": 12, "decrease": 0.75}},
        registry={"consistency": "watch"},
    )
    again = scenario_from_dict(copy.deepcopy(sc.to_dict()))
    assert again.state == sc.state
    assert again.cache == sc.cache
    assert again.batching == sc.batching
    assert again.registry == sc.registry
    for key in ("state", "cache", "batching", "registry"):
        assert again.to_dict()[key] == sc.to_dict()[key]
