"""Reading scenario YAML with line numbers, and applying ``--set`` overrides.

Errors must point at the line of the bad key, so the YAML is composed into nodes and converted
by hand, remembering the line of every key path on the way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from labkit.errors import ScenarioError

Marks = dict[str, int]


def _convert(node: yaml.Node, path: str, marks: Marks, source: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                yaml.safe_load(yaml.serialize(key_node))
                if key_node.tag != "tag:yaml.org,2002:str"
                else key_node.value
            )
            if not isinstance(key, str):
                raise ScenarioError(
                    f"keys must be strings, got {key!r}",
                    path=path,
                    source=source,
                    line=key_node.start_mark.line + 1,
                )
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise ScenarioError(
                    "duplicate key", path=sub, source=source, line=key_node.start_mark.line + 1
                )
            marks[sub] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, sub, marks, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            sub = f"{path}.{i}" if path else str(i)
            marks[sub] = item.start_mark.line + 1
            items.append(_convert(item, sub, marks, source))
        return items
    return (
        yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" else node.value
    )


def load_yaml(path: str | Path) -> tuple[dict[str, Any], Marks]:
    """The scenario file as plain data plus a map from dotted key path to line number."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("no such scenario file", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario file: {exc}", source=source) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(
            f"not valid YAML: {problem}",
            source=source,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    marks: Marks = {}
    if node is None:
        raise ScenarioError("the scenario file is empty", source=source)
    data = _convert(node, "", marks, source)
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a mapping of keys to values", source=source, line=1)
    return data, marks


def line_for(marks: Marks, path: str) -> int | None:
    """Line of the deepest key on ``path`` that the file actually has."""
    parts = path.split(".") if path else []
    while parts:
        line = marks.get(".".join(parts))
        if line is not None:
            return line
        parts.pop()
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` → (["a", "b", "c"], VALUE parsed as a YAML scalar or flow value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError(f"--set {text!r}: expected KEY=VALUE, e.g. balancer.strategy=p2c")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ScenarioError(f"--set {text!r}: empty part in key path {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ScenarioError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return parts, parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a copy of ``data``; missing sections are created, list items by index.

    Whether the key exists in the schema is checked by validation afterwards, so a typo is
    reported as an unknown key with its full path.
    """
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ScenarioError(
                        f"--set {text!r}: {where!r} is not an index of a list of {len(node)}"
                    )
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ScenarioError(
                    f"--set {text!r}: {'.'.join(parts[:i])!r} is a value, not a section"
                )
    return out
