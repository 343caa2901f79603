"""A tiny validator for one mapping of a scenario.

Each section reads its keys through a ``Section`` that checks type and range, fills documented
defaults, and records the resolved value, so the normalised scenario echoed in ``summary.json``
is exactly what ran. ``done()`` turns any key nobody read into an "unknown key" error.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labkit.distributions import Distribution, parse_distribution
from labkit.errors import ScenarioError

_MISSING: Any = object()


class Section:
    def __init__(self, raw: Any, path: str, base_dir: Path | None = None) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ScenarioError(f"must be a mapping, got {_kind(raw)}", path=path)
        self.raw = raw
        self.path = path
        self.base_dir = base_dir
        self.resolved: dict[str, Any] = {}
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def _get(self, name: str, default: Any) -> Any:
        self._read.add(name)
        value = self.raw.get(name)
        if value is None:
            if default is _MISSING:
                near = difflib.get_close_matches(name, [k for k in self.raw if k not in self._read])
                hint = f" (found {near[0]!r}: a typo?)" if near else ""
                raise ScenarioError(f"is required{hint}", path=self.key(name))
            return default
        return value

    def number(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
        min_exclusive: bool = False,
        integer: bool = False,
    ) -> Any:
        value = self._get(name, default)
        if value is None:
            self.resolved[name] = None
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(
                f"must be {'an integer' if integer else 'a number'}, got {_kind(value)}",
                path=self.key(name),
            )
        if integer and (isinstance(value, float) and not value.is_integer()):
            raise ScenarioError(f"must be an integer, got {value!r}", path=self.key(name))
        if not math.isfinite(value):
            raise ScenarioError(f"must be finite, got {value!r}", path=self.key(name))
        if min is not None and (value <= min if min_exclusive else value < min):
            op = ">" if min_exclusive else ">="
            raise ScenarioError(f"must be {op} {min:g}, got {value!r}", path=self.key(name))
        if max is not None and value > max:
            raise ScenarioError(f"must be <= {max:g}, got {value!r}", path=self.key(name))
        value = int(value) if integer else float(value)
        self.resolved[name] = value
        return value

    def string(
        self, name: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None
    ) -> Any:
        value = self._get(name, default)
        if value is None:
            self.resolved[name] = None
            return None
        if not isinstance(value, str) or (not value and default != ""):
            raise ScenarioError(
                f"must be a non-empty string, got {_kind(value)}", path=self.key(name)
            )
        if choices is not None:
            choices = tuple(choices)
            if value not in choices:
                raise ScenarioError(
                    f"unknown value {value!r} (choose one of: {', '.join(choices)})",
                    path=self.key(name),
                )
        self.resolved[name] = value
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"must be true or false, got {_kind(value)}", path=self.key(name))
        self.resolved[name] = value
        return value

    def string_list(self, name: str, default: Any = _MISSING, *, allow_empty: bool = False) -> Any:
        value = self._get(name, default)
        if value is None:
            self.resolved[name] = None
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ScenarioError(
                f"must be a list of non-empty strings, got {_kind(value)}", path=self.key(name)
            )
        if not value and not allow_empty:
            raise ScenarioError("must not be empty", path=self.key(name))
        if len(set(value)) != len(value):
            raise ScenarioError("has duplicate entries", path=self.key(name))
        self.resolved[name] = list(value)
        return tuple(value)

    def distribution(self, name: str, default: Any = _MISSING, *, unit: str = "ms") -> Any:
        value = self._get(name, default)
        if value is None:
            self.resolved[name] = None
            return None
        dist = (
            value
            if isinstance(value, Distribution)
            else parse_distribution(value, unit=unit, path=self.key(name), base_dir=self.base_dir)
        )
        self.resolved[name] = dist.spec
        return dist

    def section(self, name: str) -> Section:
        self._read.add(name)
        return Section(self.raw.get(name), self.key(name), self.base_dir)

    def raw_value(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        return self.raw.get(name, default)

    def done(self, *, allowed_hint: Iterable[str] | None = None) -> dict[str, Any]:
        unknown = [k for k in self.raw if k not in self._read]
        if unknown:
            allowed = sorted(allowed_hint if allowed_hint is not None else self._read)
            near = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ScenarioError(
                f"unknown key {unknown[0]!r} ({hint}allowed here: {', '.join(allowed)})",
                path=self.key(unknown[0]),
            )
        return self.resolved


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"
