"""A terminal progress bar that appears only for runs longer than a second.

Short runs stay quiet; long ones show simulated-time progress and wall time on stderr. No
dependency: a carriage-return line is all a terminal or CI log needs.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, *, stream: TextIO | None = None, after_s: float = 1.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.after_s = after_s
        self.started = time.perf_counter()
        self.shown = False
        self._last_pct = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, fraction: float) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed < self.after_s and fraction < 1.0:
            return
        if not self.shown and fraction >= 1.0:
            return  # finished within the grace period: never shown
        pct = int(fraction * 100)
        # on a terminal redraw in place; in a log print every 10 % so it stays short
        if pct == self._last_pct or (not self._tty and pct % 10 and pct < 100):
            return
        self._last_pct = pct
        self.shown = True
        width = 30
        filled = int(width * fraction)
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.label} [{bar}] {pct:3d}%  {elapsed:5.1f}s"
        end = "\r" if self._tty and fraction < 1.0 else "\n"
        self.stream.write(line + end)
        self.stream.flush()

    def close(self) -> None:
        if self.shown and self._tty and self._last_pct < 100:
            self.stream.write("\n")
            self.stream.flush()
