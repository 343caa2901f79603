"""Random-variable specs from scenario files, sampled with numpy.

Scenario authors describe latencies the way they measure them (a median and a p99, a trace in a
CSV), so the parser accepts those forms and converts them to sampling parameters once. Every
numeric key carries its unit as a suffix (``mean_ms``) because a bare ``mean: 40`` in a YAML file
is the classic seconds-versus-milliseconds bug; dimensionless quantities (speed factors) use
``unit=""`` and unsuffixed keys.

All validation happens in :func:`parse_distribution`, which knows the key path of every value and
so can raise a :class:`~labkit.errors.ScenarioError` that points at the exact bad key. The
dataclasses trust their arguments.
"""

from __future__ import annotations

import csv
import math
import numbers
import pathlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit.errors import ScenarioError

__all__ = [
    "BatchSampler",
    "Bimodal",
    "Constant",
    "Distribution",
    "Empirical",
    "Exponential",
    "LogNormal",
    "Mixture",
    "Pareto",
    "Uniform",
    "parse_distribution",
]

Z99 = 2.326347874040841
"""Standard normal 0.99 quantile: turns a (median, p99) pair into a lognormal sigma."""


def _fmt(x: float, unit: str) -> str:
    return f"{x:g} {unit}" if unit else f"{x:g}"


class Distribution(ABC):
    """A non-negative random variable in a fixed unit (``"ms"`` or ``""``)."""

    unit: str

    @abstractmethod
    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` float64 samples; all randomness comes from ``rng`` for reproducibility."""

    @property
    @abstractmethod
    def mean(self) -> float:
        """Exact mean, so tests and theory can compare against it without sampling noise."""

    @property
    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Normalised spec: echoed into results and re-parsable to an equal distribution."""

    @abstractmethod
    def describe(self) -> str:
        """Short human-readable form for logs and plot labels."""

    def _key(self, name: str) -> str:
        return f"{name}_{self.unit}" if self.unit else name


@dataclass(frozen=True)
class Constant(Distribution):
    value: float
    unit: str = "ms"

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, self.value, dtype=np.float64)

    @property
    def mean(self) -> float:
        return self.value

    @property
    def spec(self) -> dict[str, Any]:
        return {"dist": "constant", self._key("value"): self.value}

    def describe(self) -> str:
        return f"constant({_fmt(self.value, self.unit)})"


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float
    unit: str = "ms"

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def spec(self) -> dict[str, Any]:
        return {"dist": "uniform", self._key("low"): self.low, self._key("high"): self.high}

    def describe(self) -> str:
        return f"uniform({_fmt(self.low, self.unit)} to {_fmt(self.high, self.unit)})"


@dataclass(frozen=True)
class Exponential(Distribution):
    # Not called ``mean``: that name is the property every distribution shares.
    mean_value: float
    unit: str = "ms"

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.exponential(self.mean_value, size)

    @property
    def mean(self) -> float:
        return self.mean_value

    @property
    def spec(self) -> dict[str, Any]:
        return {"dist": "exponential", self._key("mean"): self.mean_value}

    def describe(self) -> str:
        return f"exponential(mean {_fmt(self.mean_value, self.unit)})"


@dataclass(frozen=True)
class LogNormal(Distribution):
    """``p99`` is kept only to echo the spec the way it was written; ``sigma`` drives sampling."""

    median: float
    sigma: float
    unit: str = "ms"
    p99: float | None = None

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.lognormal(math.log(self.median), self.sigma, size)

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"dist": "lognormal", self._key("median"): self.median}
        if self.p99 is not None:
            spec[self._key("p99")] = self.p99
        else:
            spec["sigma"] = self.sigma
        return spec

    def describe(self) -> str:
        second = (
            f"p99 {_fmt(self.p99, self.unit)}" if self.p99 is not None else f"sigma {self.sigma:g}"
        )
        return f"lognormal(median {_fmt(self.median, self.unit)}, {second})"


@dataclass(frozen=True)
class Pareto(Distribution):
    """Pareto type I with minimum ``scale``, optionally clipped at ``max``.

    ``given_mean`` only records that the spec was written with ``mean``; it is the mean of the
    *unclipped* variable and ``scale`` was derived from it.
    """

    alpha: float
    scale: float
    unit: str = "ms"
    max: float | None = None
    given_mean: float | None = None

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        # numpy's pareto() is the Lomax (Pareto II) variable; 1 + Lomax is Pareto I with x_m = 1.
        x = self.scale * (1.0 + rng.pareto(self.alpha, size))
        return x if self.max is None else np.minimum(x, self.max)

    @property
    def mean(self) -> float:
        """Analytic: E[min(X, M)] = x_m + integral from x_m to M of (x_m/t)^alpha dt.

        Infinite for an unclipped Pareto with alpha <= 1.
        """
        a, xm = self.alpha, self.scale
        if self.max is None:
            return a * xm / (a - 1) if a > 1 else math.inf
        m = self.max
        if a == 1:
            return xm + xm * math.log(m / xm)
        return xm + xm**a * (m ** (1 - a) - xm ** (1 - a)) / (1 - a)

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"dist": "pareto", "alpha": self.alpha}
        if self.given_mean is not None:
            spec[self._key("mean")] = self.given_mean
        else:
            spec[self._key("scale")] = self.scale
        if self.max is not None:
            spec[self._key("max")] = self.max
        return spec

    def describe(self) -> str:
        text = f"pareto(alpha {self.alpha:g}, scale {_fmt(self.scale, self.unit)}"
        if self.max is not None:
            text += f", max {_fmt(self.max, self.unit)}"
        return text + ")"


def _scatter(
    rng: np.random.Generator, choice: np.ndarray, parts: Sequence[Distribution]
) -> np.ndarray:
    """Fill each slot from the component ``choice`` names, drawing each component once."""
    out = np.empty(choice.shape[0], dtype=np.float64)
    for index, part in enumerate(parts):
        mask = choice == index
        out[mask] = part.sample(rng, int(np.count_nonzero(mask)))
    return out


@dataclass(frozen=True)
class Bimodal(Distribution):
    fast: Distribution
    slow: Distribution
    slow_fraction: float
    unit: str = "ms"

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        choice = (rng.random(size) < self.slow_fraction).astype(np.int8)
        return _scatter(rng, choice, (self.fast, self.slow))

    @property
    def mean(self) -> float:
        f = self.slow_fraction
        return (1 - f) * self.fast.mean + f * self.slow.mean

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "dist": "bimodal",
            "fast": self.fast.spec,
            "slow": self.slow.spec,
            "slow_fraction": self.slow_fraction,
        }

    def describe(self) -> str:
        f = self.slow_fraction
        return f"bimodal({1 - f:.0%} {self.fast.describe()}, {f:.0%} {self.slow.describe()})"


@dataclass(frozen=True)
class Mixture(Distribution):
    """``weights`` are kept as written (so the spec round-trips exactly) and normalised on use."""

    weights: tuple[float, ...]
    components: tuple[Distribution, ...]
    unit: str = "ms"

    @property
    def probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        choice = rng.choice(len(self.components), size=size, p=self.probabilities)
        return _scatter(rng, choice, self.components)

    @property
    def mean(self) -> float:
        return float(
            sum(p * c.mean for p, c in zip(self.probabilities, self.components, strict=True))
        )

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "dist": "mixture",
            "components": [
                {"weight": w, "dist": c.spec}
                for w, c in zip(self.weights, self.components, strict=True)
            ],
        }

    def describe(self) -> str:
        parts = ", ".join(
            f"{p:.0%} {c.describe()}"
            for p, c in zip(self.probabilities, self.components, strict=True)
        )
        return f"mixture({parts})"


@dataclass(frozen=True)
class Empirical(Distribution):
    """Bootstrap from observed values.

    ``csv`` is the resolved absolute path, so the echoed spec re-parses from any directory.
    """

    values: tuple[float, ...] = field(repr=False)
    unit: str = "ms"
    csv: str | None = None
    column: str | None = None
    _array: np.ndarray = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_array", np.asarray(self.values, dtype=np.float64))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self._array[rng.integers(0, self._array.shape[0], size)]

    @property
    def mean(self) -> float:
        return float(self._array.mean())

    @property
    def spec(self) -> dict[str, Any]:
        if self.csv is None:
            return {"dist": "empirical", "values": list(self.values)}
        spec: dict[str, Any] = {"dist": "empirical", "csv": self.csv}
        if self.column is not None:
            spec["column"] = self.column
        return spec

    def describe(self) -> str:
        source = f" from {pathlib.Path(self.csv).name}" if self.csv else ""
        return f"empirical({len(self.values)} values{source}, mean {_fmt(self.mean, self.unit)})"


class BatchSampler:
    """One float per call from a distribution drawn in numpy batches.

    The simulator asks for one service time per request; calling numpy per request costs
    microseconds, while ``next()`` on a list iterator costs tens of nanoseconds.
    """

    __slots__ = ("_batch", "_dist", "_next", "_rng")

    def __init__(self, dist: Distribution, rng: np.random.Generator, batch: int = 8192) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._dist = dist
        self._rng = rng
        self._batch = batch
        self._next: Callable[[], float] = iter(()).__next__

    def __call__(self) -> float:
        try:
            return self._next()
        except StopIteration:
            batch: list[float] = self._dist.sample(self._rng, self._batch).tolist()
            self._next = iter(batch).__next__
            return self._next()


# --------------------------------------------------------------------------- parsing


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value: object, path: str) -> float:
    if isinstance(value, bool):
        raise ScenarioError(f"must be a number, not a boolean (got {value})", path=path)
    if not _is_number(value):
        raise ScenarioError(f"must be a number, got {value!r}", path=path)
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x):
        raise ScenarioError(f"must be a finite number, got {x}", path=path)
    return x


class _Reader:
    """Reads one dist mapping; knows the unit suffix and the key path for error messages."""

    def __init__(
        self,
        spec: Mapping[Any, Any],
        unit: str,
        path: str,
        base_dir: pathlib.Path | None,
    ) -> None:
        self.spec = spec
        self.kind = str(spec["dist"])
        self.unit = unit
        self.path = path
        self.base_dir = base_dir

    def key(self, name: str) -> str:
        return f"{name}_{self.unit}" if self.unit else name

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(message, path=self.at(key))

    def allow(self, *keys: str) -> None:
        allowed = ("dist", *keys)
        for key in self.spec:
            if key not in allowed:
                raise ScenarioError(
                    f"unknown key {key!r} for dist {self.kind!r} (allowed: {', '.join(allowed)})",
                    path=self.at(str(key)),
                )

    def has(self, key: str) -> bool:
        return key in self.spec

    def number(self, key: str) -> float:
        if key not in self.spec:
            raise ScenarioError(f"missing key {key!r} for dist {self.kind!r}", path=self.path)
        return _number(self.spec[key], self.at(key))

    def optional(self, key: str) -> float | None:
        return self.number(key) if key in self.spec else None

    def non_negative(self, key: str) -> float:
        x = self.number(key)
        if x < 0:
            raise self.fail(key, f"must be >= 0, got {x:g}")
        return x

    def positive(self, key: str) -> float:
        x = self.number(key)
        if x <= 0:
            raise self.fail(key, f"must be > 0, got {x:g}")
        return x

    def sub(self, key: str) -> Distribution:
        if key not in self.spec:
            raise ScenarioError(f"missing key {key!r} for dist {self.kind!r}", path=self.path)
        return parse_distribution(
            self.spec[key], unit=self.unit, path=self.at(key), base_dir=self.base_dir
        )

    def one_of(self, *keys: str) -> str:
        present = [k for k in keys if k in self.spec]
        if not present:
            raise ScenarioError(
                f"dist {self.kind!r} needs one of {', '.join(keys)}", path=self.path
            )
        if len(present) > 1:
            raise self.fail(
                present[1], f"give only one of {', '.join(keys)} for dist {self.kind!r}"
            )
        return present[0]


def _constant(r: _Reader) -> Distribution:
    value = r.key("value")
    r.allow(value)
    return Constant(r.non_negative(value), r.unit)


def _uniform(r: _Reader) -> Distribution:
    low, high = r.key("low"), r.key("high")
    r.allow(low, high)
    lo, hi = r.non_negative(low), r.non_negative(high)
    if hi < lo:
        raise r.fail(high, f"must be >= {low} ({lo:g}), got {hi:g}")
    return Uniform(lo, hi, r.unit)


def _exponential(r: _Reader) -> Distribution:
    mean = r.key("mean")
    r.allow(mean)
    return Exponential(r.positive(mean), r.unit)


def _lognormal(r: _Reader) -> Distribution:
    median, p99 = r.key("median"), r.key("p99")
    r.allow(median, p99, "sigma")
    med = r.positive(median)
    if r.one_of(p99, "sigma") == "sigma":
        return LogNormal(med, r.non_negative("sigma"), r.unit)
    high = r.number(p99)
    if high <= med:
        raise r.fail(p99, f"must be greater than {median} ({med:g}), got {high:g}")
    return LogNormal(med, math.log(high / med) / Z99, r.unit, p99=high)


def _pareto(r: _Reader) -> Distribution:
    scale, mean, cap = r.key("scale"), r.key("mean"), r.key("max")
    r.allow("alpha", scale, mean, cap)
    alpha = r.positive("alpha")
    given_mean = None
    if r.one_of(scale, mean) == scale:
        xm = r.positive(scale)
    else:
        given_mean = r.positive(mean)
        if alpha <= 1:
            raise r.fail(
                "alpha", f"must be > 1 when {mean} is given (the mean is infinite), got {alpha:g}"
            )
        xm = given_mean * (alpha - 1) / alpha
    top = r.optional(cap)
    if top is not None and top < xm:
        raise r.fail(cap, f"must be >= the pareto minimum ({xm:g}), got {top:g}")
    return Pareto(alpha, xm, r.unit, max=top, given_mean=given_mean)


def _bimodal(r: _Reader) -> Distribution:
    r.allow("fast", "slow", "slow_fraction")
    fast, slow = r.sub("fast"), r.sub("slow")
    fraction = r.number("slow_fraction")
    if not 0 <= fraction <= 1:
        raise r.fail("slow_fraction", f"must be between 0 and 1, got {fraction:g}")
    return Bimodal(fast, slow, fraction, r.unit)


def _mixture(r: _Reader) -> Distribution:
    r.allow("components")
    if not r.has("components"):
        raise ScenarioError("missing key 'components' for dist 'mixture'", path=r.path)
    items = r.spec["components"]
    where = r.at("components")
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise ScenarioError("must be a non-empty list of {weight, dist} mappings", path=where)
    weights: list[float] = []
    parts: list[Distribution] = []
    for index, item in enumerate(items):
        item_path = _join(where, index)
        if not isinstance(item, Mapping):
            raise ScenarioError(
                f"must be a mapping with weight and dist, got {item!r}", path=item_path
            )
        for key in item:
            if key not in ("weight", "dist"):
                raise ScenarioError(
                    f"unknown key {key!r} in a mixture component (allowed: weight, dist)",
                    path=_join(item_path, key),
                )
        for key in ("weight", "dist"):
            if key not in item:
                raise ScenarioError(f"missing key {key!r} in a mixture component", path=item_path)
        weight = _number(item["weight"], _join(item_path, "weight"))
        if weight <= 0:
            raise ScenarioError(f"must be > 0, got {weight:g}", path=_join(item_path, "weight"))
        weights.append(weight)
        parts.append(
            parse_distribution(
                item["dist"], unit=r.unit, path=_join(item_path, "dist"), base_dir=r.base_dir
            )
        )
    return Mixture(tuple(weights), tuple(parts), r.unit)


def _empirical(r: _Reader) -> Distribution:
    r.allow("csv", "column", "values")
    if r.one_of("csv", "values") == "values":
        if r.has("column"):
            raise r.fail("column", "only applies together with csv")
        return Empirical(_value_list(r.spec["values"], r.at("values")), r.unit)
    return _from_csv(r)


def _value_list(items: object, path: str) -> tuple[float, ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ScenarioError(f"must be a list of numbers, got {items!r}", path=path)
    if not items:
        raise ScenarioError("must contain at least one value", path=path)
    values = tuple(_number(x, _join(path, i)) for i, x in enumerate(items))
    for i, x in enumerate(values):
        if x < 0:
            raise ScenarioError(f"must be >= 0, got {x:g}", path=_join(path, i))
    return values


def _parse_cell(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _from_csv(r: _Reader) -> Distribution:
    raw = r.spec["csv"]
    if not isinstance(raw, str | pathlib.PurePath) or not str(raw):
        raise r.fail("csv", f"must be a file path, got {raw!r}")
    file = pathlib.Path(raw).expanduser()
    if not file.is_absolute():
        file = (r.base_dir or pathlib.Path.cwd()) / file
    file = file.resolve()
    if not file.is_file():
        raise r.fail("csv", f"file not found: {file}")
    column = r.spec.get("column")
    if column is not None and not isinstance(column, str):
        raise r.fail("column", f"must be a column name, got {column!r}")

    with file.open(newline="") as handle:
        reader = csv.reader(handle)
        rows = [(reader.line_num, [c.strip() for c in row]) for row in reader]
    rows = [(line, row) for line, row in rows if any(row)]
    if not rows:
        raise r.fail("csv", f"no numeric values in {file}")

    # A header is recognised by a non-numeric cell in the first row.
    header: list[str] | None = None
    if any(_parse_cell(c) is None for c in rows[0][1] if c):
        header = rows[0][1]
        rows = rows[1:]

    def cells(index: int) -> Iterator[tuple[int, str]]:
        for line, row in rows:
            if index < len(row) and row[index]:
                yield line, row[index]

    if column is not None:
        if header is None:
            raise r.fail("column", f"{file} has no header row to look up column {column!r}")
        if column not in header:
            raise r.fail(
                "column", f"unknown column {column!r} in {file} (columns: {', '.join(header)})"
            )
        index = header.index(column)
    else:
        width = max([len(header or [])] + [len(row) for _, row in rows])
        numeric = [
            i
            for i in range(width)
            if any(True for _ in cells(i)) and all(_parse_cell(c) is not None for _, c in cells(i))
        ]
        if not numeric:
            raise r.fail("csv", f"no numeric values in {file}")
        index = numeric[0]
    name = header[index] if header is not None else None
    label = f"column {name!r}" if name is not None else f"column {index + 1}"

    values: list[float] = []
    for line, cell in cells(index):
        x = _parse_cell(cell)
        if x is None or not math.isfinite(x):
            raise r.fail(
                "csv", f"{file} line {line}: {label} value {cell!r} is not a finite number"
            )
        if x < 0:
            raise r.fail("csv", f"{file} line {line}: negative value {x:g} in {label}")
        values.append(x)
    if not values:
        raise r.fail("csv", f"no numeric values in {label} of {file}")
    return Empirical(tuple(values), r.unit, csv=str(file), column=name)


_PARSERS: dict[str, Callable[[_Reader], Distribution]] = {
    "constant": _constant,
    "uniform": _uniform,
    "exponential": _exponential,
    "lognormal": _lognormal,
    "pareto": _pareto,
    "bimodal": _bimodal,
    "mixture": _mixture,
    "empirical": _empirical,
}


def parse_distribution(
    spec: object,
    *,
    unit: str = "ms",
    path: str = "",
    base_dir: pathlib.Path | None = None,
) -> Distribution:
    """Validate a scenario's distribution spec and build the sampler for it.

    ``path`` is the key path of ``spec`` inside the scenario, prefixed to every error so a user
    can find the bad key; ``base_dir`` (the scenario file's directory) anchors relative CSV paths
    so a scenario works from whatever directory it is run. A bare number means a constant.
    """
    if _is_number(spec):
        value = _number(spec, path)
        if value < 0:
            raise ScenarioError(f"must be >= 0, got {value:g}", path=path)
        return Constant(value, unit)
    if isinstance(spec, bool):
        _number(spec, path)  # raises the boolean error
    if not isinstance(spec, Mapping):
        raise ScenarioError(
            f"expected a number or a mapping with a 'dist' key, got {spec!r}", path=path
        )
    known = ", ".join(_PARSERS)
    if "dist" not in spec:
        raise ScenarioError(f"missing key 'dist' (known dists: {known})", path=path)
    kind = spec["dist"]
    if not isinstance(kind, str) or kind not in _PARSERS:
        raise ScenarioError(f"unknown dist {kind!r} (known: {known})", path=_join(path, "dist"))
    return _PARSERS[kind](_Reader(spec, unit, path, base_dir))
