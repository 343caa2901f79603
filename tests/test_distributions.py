from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.distributions import (
    Z99,
    BatchSampler,
    Bimodal,
    Constant,
    Distribution,
    Empirical,
    Exponential,
    LogNormal,
    Mixture,
    Pareto,
    Uniform,
    parse_distribution,
)
from labkit.errors import ScenarioError

N = 200_000
EXP5 = {"dist": "exponential", "mean_ms": 5}


def draw(dist: Distribution, seed: int = 1, size: int = N) -> np.ndarray:
    return dist.sample(np.random.default_rng(seed), size)


def assert_mean(dist: Distribution, rel: float = 0.02) -> np.ndarray:
    x = draw(dist)
    assert x.dtype == np.float64
    assert x.shape == (N,)
    assert (x >= 0).all()
    assert x.mean() == pytest.approx(dist.mean, rel=rel)
    return x


SPECS: list[tuple[object, type[Distribution], float]] = [
    (7, Constant, 7.0),
    (2.5, Constant, 2.5),
    ({"dist": "constant", "value_ms": 3}, Constant, 3.0),
    ({"dist": "uniform", "low_ms": 10, "high_ms": 30}, Uniform, 20.0),
    (EXP5, Exponential, 5.0),
    ({"dist": "lognormal", "median_ms": 40, "sigma": 0.5}, LogNormal, 40 * math.exp(0.125)),
    ({"dist": "pareto", "alpha": 3, "scale_ms": 10}, Pareto, 15.0),
    ({"dist": "pareto", "alpha": 3, "mean_ms": 12}, Pareto, 12.0),
    (
        {"dist": "bimodal", "fast": 2, "slow": EXP5, "slow_fraction": 0.25},
        Bimodal,
        0.75 * 2 + 0.25 * 5,
    ),
    (
        {
            "dist": "mixture",
            "components": [{"weight": 3, "dist": 1}, {"weight": 1, "dist": EXP5}],
        },
        Mixture,
        0.75 * 1 + 0.25 * 5,
    ),
    ({"dist": "empirical", "values": [1, 2, 3, 10]}, Empirical, 4.0),
]


@pytest.mark.parametrize(("spec", "cls", "mean"), SPECS)
def test_every_kind_parses_and_samples_its_mean(
    spec: object, cls: type[Distribution], mean: float
) -> None:
    dist = parse_distribution(spec)
    assert isinstance(dist, cls)
    assert dist.mean == pytest.approx(mean)
    assert_mean(dist)
    assert dist.describe().startswith(dist.spec["dist"] + "(")


@pytest.mark.parametrize(("spec", "cls", "mean"), SPECS)
def test_spec_round_trips(spec: object, cls: type[Distribution], mean: float) -> None:
    dist = parse_distribution(spec)
    again = parse_distribution(dist.spec)
    assert again == dist
    assert again.spec == dist.spec
    assert np.array_equal(draw(again, size=100), draw(dist, size=100))


def test_unitless_keys_have_no_suffix() -> None:
    dist = parse_distribution({"dist": "uniform", "low": 0.5, "high": 1.5}, unit="")
    assert dist == Uniform(0.5, 1.5, unit="")
    assert dist.spec == {"dist": "uniform", "low": 0.5, "high": 1.5}
    assert dist.describe() == "uniform(0.5 to 1.5)"
    with pytest.raises(ScenarioError) as err:
        parse_distribution({"dist": "uniform", "low_ms": 0.5, "high_ms": 1.5}, unit="")
    assert err.value.path == "low_ms"


def test_lognormal_median_and_p99_are_reproduced() -> None:
    dist = parse_distribution({"dist": "lognormal", "median_ms": 40, "p99_ms": 250})
    assert isinstance(dist, LogNormal)
    assert dist.sigma == pytest.approx(math.log(250 / 40) / Z99)
    assert dist.describe() == "lognormal(median 40 ms, p99 250 ms)"
    x = draw(dist)
    assert np.percentile(x, 50) == pytest.approx(40, rel=0.02)
    assert np.percentile(x, 99) == pytest.approx(250, rel=0.03)
    assert x.mean() == pytest.approx(dist.mean, rel=0.02)


def test_pareto_minimum_and_truncation() -> None:
    dist = parse_distribution({"dist": "pareto", "alpha": 1.5, "scale_ms": 10, "max_ms": 500})
    assert isinstance(dist, Pareto)
    x = draw(dist)
    assert x.min() >= 10
    assert x.max() <= 500
    assert (x == 500).any()
    # The clipped mean is analytic; alpha = 1 takes the logarithmic branch.
    assert x.mean() == pytest.approx(dist.mean, rel=0.02)
    unit_alpha = parse_distribution({"dist": "pareto", "alpha": 1, "scale_ms": 2, "max_ms": 200})
    assert unit_alpha.mean == pytest.approx(2 + 2 * math.log(100))
    assert draw(unit_alpha).mean() == pytest.approx(unit_alpha.mean, rel=0.02)


def test_pareto_without_finite_mean() -> None:
    dist = parse_distribution({"dist": "pareto", "alpha": 0.8, "scale_ms": 1})
    assert dist.mean == math.inf
    assert draw(dist, size=1000).min() >= 1


def write(tmp_path: pathlib.Path, text: str, name: str = "lat.csv") -> pathlib.Path:
    file = tmp_path / name
    file.write_text(text)
    return file


def test_empirical_csv_with_header_and_column(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "id,agent,latency_ms\n1,a,10\n2,b,20\n3,a,30\n\n4,b,40\n")
    spec: dict[str, Any] = {"dist": "empirical", "csv": "lat.csv"}
    dist = parse_distribution(spec, base_dir=tmp_path)
    assert isinstance(dist, Empirical)
    assert dist.values == (1, 2, 3, 4)  # first numeric column by default
    assert dist.column == "id"
    chosen = parse_distribution({**spec, "column": "latency_ms"}, base_dir=tmp_path)
    assert chosen.values == (10, 20, 30, 40)
    assert chosen.mean == 25
    x = draw(chosen, size=10_000)
    assert set(np.unique(x)) == {10, 20, 30, 40}
    # The echoed spec names the resolved file, so it re-parses from anywhere.
    assert chosen.spec == {
        "dist": "empirical",
        "csv": str((tmp_path / "lat.csv").resolve()),
        "column": "latency_ms",
    }
    assert parse_distribution(chosen.spec) == chosen


def test_empirical_csv_without_header(tmp_path: pathlib.Path) -> None:
    file = write(tmp_path, "5\n7.5\n 9 \n")
    dist = parse_distribution({"dist": "empirical", "csv": str(file)})
    assert dist.values == (5, 7.5, 9)
    assert dist.spec == {"dist": "empirical", "csv": str(file.resolve())}
    assert dist.describe() == "empirical(3 values from lat.csv, mean 7.16667 ms)"


def test_batch_sampler_is_deterministic_and_matches_the_distribution() -> None:
    dist = parse_distribution({"dist": "lognormal", "median_ms": 40, "p99_ms": 250})

    def run(seed: int) -> list[float]:
        sampler = BatchSampler(dist, np.random.default_rng(seed), batch=100)
        return [sampler() for _ in range(1050)]

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    assert all(type(x) is float for x in first)
    # Batching does not change the stream: it is the numpy draw, handed out in order.
    rng = np.random.default_rng(42)
    expected = np.concatenate([dist.sample(rng, 100) for _ in range(11)])[:1050]
    assert first == expected.tolist()


# --------------------------------------------------------------------------- errors

P = "workers.service_time"


def error_for(spec: object, **kwargs: Any) -> ScenarioError:
    with pytest.raises(ScenarioError) as err:
        parse_distribution(spec, path=P, **kwargs)
    return err.value


def test_error_unknown_key() -> None:
    err = error_for({"dist": "exponential", "mean_s": 5})
    assert err.path == f"{P}.mean_s"
    assert err.message == "unknown key 'mean_s' for dist 'exponential' (allowed: dist, mean_ms)"
    assert str(err) == f"{P}.mean_s: {err.message}"


def test_error_unknown_dist() -> None:
    err = error_for({"dist": "gamma", "mean_ms": 5})
    assert err.path == f"{P}.dist"
    assert "unknown dist 'gamma'" in err.message
    assert "lognormal" in err.message and "empirical" in err.message


def test_error_missing_key() -> None:
    err = error_for({"dist": "uniform", "low_ms": 1})
    assert err.path == P
    assert "missing key 'high_ms'" in err.message
    assert "missing key 'dist'" in error_for({"mean_ms": 5}).message
    assert "needs one of p99_ms, sigma" in error_for({"dist": "lognormal", "median_ms": 4}).message


def test_error_p99_not_above_median() -> None:
    err = error_for({"dist": "lognormal", "median_ms": 40, "p99_ms": 10})
    assert err.path == f"{P}.p99_ms"
    assert err.message == "must be greater than median_ms (40), got 10"


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        (-1, P, "must be >= 0, got -1"),
        ({"dist": "constant", "value_ms": -2}, f"{P}.value_ms", "must be >= 0"),
        ({"dist": "uniform", "low_ms": -1, "high_ms": 2}, f"{P}.low_ms", "must be >= 0"),
        ({"dist": "uniform", "low_ms": 3, "high_ms": 2}, f"{P}.high_ms", "must be >= low_ms (3)"),
        ({"dist": "exponential", "mean_ms": 0}, f"{P}.mean_ms", "must be > 0, got 0"),
        ({"dist": "lognormal", "median_ms": 4, "sigma": -1}, f"{P}.sigma", "must be >= 0"),
        ({"dist": "pareto", "alpha": 1, "mean_ms": 5}, f"{P}.alpha", "must be > 1"),
        ({"dist": "pareto", "alpha": 2, "scale_ms": 5, "max_ms": 4}, f"{P}.max_ms", ">= the"),
        (
            {"dist": "pareto", "alpha": 2, "scale_ms": 5, "mean_ms": 10},
            f"{P}.mean_ms",
            "only one of",
        ),
        (
            {"dist": "bimodal", "fast": 1, "slow": 2, "slow_fraction": 1.5},
            f"{P}.slow_fraction",
            "between 0 and 1",
        ),
        ({"dist": "empirical", "values": [1, -3]}, f"{P}.values.1", "must be >= 0"),
        ({"dist": "empirical", "values": []}, f"{P}.values", "at least one"),
    ],
)
def test_error_bad_values(spec: object, path: str, fragment: str) -> None:
    err = error_for(spec)
    assert err.path == path
    assert fragment in err.message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "not a boolean"),
        ("40", "must be a number, got '40'"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (None, "must be a number"),
    ],
)
def test_error_non_numeric(value: object, fragment: str) -> None:
    err = error_for({"dist": "exponential", "mean_ms": value})
    assert err.path == f"{P}.mean_ms"
    assert fragment in err.message


def test_error_bool_as_whole_spec() -> None:
    err = error_for(False)
    assert err.path == P
    assert "not a boolean" in err.message


def test_error_nested_paths() -> None:
    slow = {"dist": "exponential", "mean_ms": -1}
    err = error_for({"dist": "bimodal", "fast": 1, "slow": slow, "slow_fraction": 0.1})
    assert err.path == f"{P}.slow.mean_ms"
    mixture = {
        "dist": "mixture",
        "components": [{"weight": 1, "dist": 2}, {"weight": 1, "dist": {"dist": "exponential"}}],
    }
    err = error_for(mixture)
    assert err.path == f"{P}.components.1.dist"
    assert "missing key 'mean_ms'" in err.message
    mixture["components"][1]["dist"] = {"dist": "exponential", "mean_ms": "x"}  # type: ignore[index]
    assert error_for(mixture).path == f"{P}.components.1.dist.mean_ms"
    bad_weight = {"dist": "mixture", "components": [{"weight": 0, "dist": 1}]}
    assert error_for(bad_weight).path == f"{P}.components.0.weight"
    extra = {"dist": "mixture", "components": [{"weight": 1, "dist": 1, "p": 2}]}
    assert error_for(extra).path == f"{P}.components.0.p"


def test_error_missing_csv_names_resolved_path(tmp_path: pathlib.Path) -> None:
    err = error_for({"dist": "empirical", "csv": "nope.csv"}, base_dir=tmp_path)
    assert err.path == f"{P}.csv"
    assert err.message == f"file not found: {(tmp_path / 'nope.csv').resolve()}"


def test_error_csv_contents(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "name\nfoo\nbar\n", "text.csv")
    write(tmp_path, "a,b\n1,x\n2,3\n", "mixed.csv")
    write(tmp_path, "lat\n3\n-4\n", "negative.csv")
    spec = {"dist": "empirical"}

    err = error_for({**spec, "csv": "text.csv"}, base_dir=tmp_path)
    assert (err.path, "no numeric values" in err.message) == (f"{P}.csv", True)

    err = error_for({**spec, "csv": "mixed.csv", "column": "c"}, base_dir=tmp_path)
    assert err.path == f"{P}.column"
    assert "unknown column 'c'" in err.message and "(columns: a, b)" in err.message

    err = error_for({**spec, "csv": "mixed.csv", "column": "b"}, base_dir=tmp_path)
    assert err.path == f"{P}.csv"
    assert "line 2" in err.message and "'x'" in err.message

    err = error_for({**spec, "csv": "negative.csv"}, base_dir=tmp_path)
    assert err.path == f"{P}.csv"
    assert "line 3: negative value -4" in err.message


# --------------------------------------------------------------------------- properties

non_negative = st.floats(min_value=0, max_value=1e6, allow_nan=False)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)


@st.composite
def simple_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["constant", "uniform", "exponential", "lognormal"]))
    if kind == "constant":
        return {"dist": kind, "value_ms": draw(non_negative)}
    if kind == "uniform":
        low, high = sorted((draw(non_negative), draw(non_negative)))
        return {"dist": kind, "low_ms": low, "high_ms": high}
    if kind == "exponential":
        return {"dist": kind, "mean_ms": draw(positive)}
    return {
        "dist": kind,
        "median_ms": draw(positive),
        "sigma": draw(st.floats(min_value=0, max_value=3)),
    }


@settings(max_examples=200, deadline=None, derandomize=True)
@given(spec=simple_specs(), seed=st.integers(0, 2**32 - 1))
def test_valid_specs_sample_finite_non_negative_and_round_trip(
    spec: dict[str, Any], seed: int
) -> None:
    dist = parse_distribution(spec)
    x = draw(dist, seed=seed, size=64)
    assert np.isfinite(x).all()
    assert (x >= 0).all()
    assert math.isfinite(dist.mean) and dist.mean >= 0
    assert parse_distribution(dist.spec) == dist
