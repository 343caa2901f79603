"""Errors that reach users.

A bad scenario must produce one line that names the file, the key path and the problem, so every
validation error in labkit is a ``ScenarioError`` carrying those parts separately: the code that
detects a problem knows the key path, the loader that catches it knows the file and line.
"""

from __future__ import annotations


class LabkitError(Exception):
    """Base class for errors labkit reports to users without a traceback."""


class ScenarioError(LabkitError):
    """A scenario (file, override or dict) is invalid.

    ``path`` is the dotted key path inside the scenario (``workers.service_time.p99_ms``),
    ``source`` the file it came from and ``line`` the 1-based line of that key when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source + (f":{self.line}" if self.line else "")
        parts = [p for p in (where, self.path) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def located(self, source: str | None, line: int | None) -> ScenarioError:
        """Return a copy that also names the file (and line) the bad key came from."""
        return ScenarioError(
            self.message,
            path=self.path,
            source=source or self.source,
            line=line if line is not None else self.line,
        )

    def under(self, prefix: str) -> ScenarioError:
        """Return a copy whose key path is nested below ``prefix``."""
        path = f"{prefix}.{self.path}" if self.path and prefix else (prefix or self.path)
        return ScenarioError(self.message, path=path, source=self.source, line=self.line)


class NoWorkerAvailable(LabkitError):
    """No healthy worker can take a request for this agent type."""

    def __init__(self, agent_type: str, reason: str = "no healthy worker") -> None:
        self.agent_type = agent_type
        self.reason = reason
        super().__init__(f"{reason} for agent type {agent_type!r}")
