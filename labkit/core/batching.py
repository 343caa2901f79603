"""Message batching between a gateway and its workers, fixed or adaptive (AIMD).

Batching trades latency for throughput: a worker pays a fixed cost per batch it handles (a
syscall, a frame, a deserialisation pass) plus a cost per message, so sending b messages at once
saves (b − 1) fixed costs of worker time, while each message waits in the gateway's buffer for the
batch to fill (at most ``max_delay_s``) and for the batch to finish. Which side of the trade wins
depends on load: at low load the wait is pure loss, near saturation the saved worker time is what
keeps queues finite.

The gateway keeps one buffer per worker link. A worker that finds several batches waiting in its
queue takes them as one, up to the limit (as a consumer drains its queue): under load batches grow
by themselves, which is where batching pays. ``sizes`` counts what the gateway flushed,
``served_sizes`` what workers actually served.

The gateway's buffers are per link. A buffer is flushed when it holds ``limit``
messages or when its oldest message has waited ``max_delay_s``, whichever comes first. The
driver owns the clock: ``add`` tells it when to arm a flush timer and ``expire`` is what the timer
calls; a timer that outlives its batch (flushed by size first) finds a newer generation and does
nothing.

In adaptive mode an ``AimdController`` moves ``limit`` the way TCP moves its window: every
``interval_s`` it looks at the p99 of the requests that finished in the interval; under
``target_p99_s`` the limit grows by ``increase``, over it the limit is multiplied by ``decrease``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from labkit.core.outcomes import Detail, Final

T = TypeVar("T")

FLUSH_REASONS = ("size", "delay")
#: requests whose latency the adaptive controller learns from: everything that went through
#: the batches, including failures and timeouts (a timeout is the worst latency of all);
#: rejections are turned away before batching and would only flatter the p99
OBSERVED_FINALS = frozenset({Final.COMPLETED, Final.FAILED, Final.TIMED_OUT})


@dataclass(frozen=True)
class AdaptiveBatching:
    target_p99_s: float
    interval_s: float = 1.0
    increase: int = 1
    decrease: float = 0.5
    min_batch: int = 1
    max_batch: int = 64
    #: fewer finished requests than this in an interval: too few for a p99, keep the limit
    min_samples: int = 20

    def __post_init__(self) -> None:
        if self.target_p99_s <= 0:
            raise ValueError(f"target_p99_s must be > 0, got {self.target_p99_s}")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        if self.increase < 1:
            raise ValueError(f"increase must be >= 1, got {self.increase}")
        if not 0 < self.decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1 (exclusive), got {self.decrease}")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min_batch <= max_batch, got {self.min_batch} and {self.max_batch}"
            )
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = 8  # the limit (the starting limit in adaptive mode)
    max_delay_s: float = 0.002
    batch_cost_s: float = 0.0005  # worker time per batch, whatever its size
    message_cost_s: float = 0.0  # worker time per message, on top of its own service time
    adaptive: AdaptiveBatching | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_delay_s < 0:
            raise ValueError(f"max_delay_s must be >= 0, got {self.max_delay_s}")
        if self.batch_cost_s < 0 or self.message_cost_s < 0:
            raise ValueError("batch_cost_s and message_cost_s must be >= 0")

    def worker_time_s(self, service_s: float, messages: int) -> float:
        """Worker time for a batch whose messages' own service times sum to ``service_s``."""
        return self.batch_cost_s + messages * self.message_cost_s + service_s


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list, without numpy."""
    ordered = sorted(values)
    # rounded first: 7 / 100 * 100 is 7.000000000000001 in binary, which would ceil to 8
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[rank - 1]


@dataclass
class AimdController:
    """Additive increase while p99 is under target, multiplicative decrease when it is not."""

    config: AdaptiveBatching
    limit: int
    _window: list[float] = field(default_factory=list)
    #: (time, limit after the decision, p99 seen in seconds or None when too few samples)
    history: list[tuple[float, int, float | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limit = min(max(self.limit, self.config.min_batch), self.config.max_batch)

    def observe(self, latency_s: float) -> None:
        self._window.append(latency_s)

    def tick(self, now: float) -> int:
        """Decide once per interval (the driver calls it every ``interval_s``)."""
        cfg = self.config
        window = self._window
        p99 = None
        if len(window) >= cfg.min_samples:
            p99 = percentile(window, 99)
            if p99 <= cfg.target_p99_s:
                self.limit = min(cfg.max_batch, self.limit + cfg.increase)
            else:
                self.limit = max(cfg.min_batch, math.floor(self.limit * cfg.decrease))
        self._window = []
        self.history.append((now, self.limit, p99))
        return self.limit


class _Buffer(Generic[T]):
    __slots__ = ("generation", "items", "opened_at")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.generation = 0
        self.opened_at = 0.0


class Batcher(Generic[T]):
    """One gateway's batch buffers, one per worker link, sharing one size limit."""

    def __init__(
        self, config: BatchingConfig, measure_from: float = 0.0, measure_until: float = math.inf
    ) -> None:
        self.config = config
        # batch-size figures cover the measured window only, like every other figure
        self._lo = measure_from
        self._hi = measure_until
        self.controller = (
            AimdController(config.adaptive, config.max_batch) if config.adaptive else None
        )
        self._buffers: dict[Hashable, _Buffer[T]] = {}
        #: flushed batch size -> how many batches
        self.sizes: dict[int, int] = {}
        self.flushes = dict.fromkeys(FLUSH_REASONS, 0)
        #: batch size a worker served (after merging queued batches) -> how many
        self.served_sizes: dict[int, int] = {}

    @property
    def limit(self) -> int:
        return self.controller.limit if self.controller is not None else self.config.max_batch

    def add(self, link: Hashable, item: T, now: float) -> tuple[list[T] | None, int | None]:
        """Buffer ``item`` for ``link``.

        Returns ``(batch, None)`` when the buffer is full and must go now, ``(None,
        generation)`` when this item opened a new buffer and the driver must call
        ``expire(link, generation, …)`` after ``max_delay_s``, and ``(None, None)`` otherwise.
        """
        buf = self._buffers.get(link)
        if buf is None:
            buf = self._buffers[link] = _Buffer()
        items = buf.items
        items.append(item)
        limit = self.limit
        if len(items) >= limit:
            return self._flush(buf, "size", limit, now), None
        if len(items) == 1:
            buf.opened_at = now
            return None, buf.generation
        return None, None

    def expire(self, link: Hashable, generation: int, now: float) -> list[T] | None:
        """The flush timer of ``generation`` fired: the batch goes, unless it already went."""
        buf = self._buffers.get(link)
        if buf is None or buf.generation != generation or not buf.items:
            return None
        return self._flush(buf, "delay", len(buf.items), now)

    def tick(self, now: float) -> list[tuple[Hashable, list[T]]]:
        """Adaptive mode, once per interval: the controller decides, and buffers the new limit
        makes full go out at once (a shrinking limit never lets a batch exceed it)."""
        if self.controller is None:
            return []
        self.controller.tick(now)
        limit = self.limit
        out: list[tuple[Hashable, list[T]]] = []
        for link, buf in self._buffers.items():
            while len(buf.items) >= limit:
                out.append((link, self._flush(buf, "size", limit, now)))
        return out

    def served(self, size: int, now: float) -> None:
        """A worker served a batch of ``size`` messages sent by this gateway."""
        if self._lo <= now < self._hi:
            self.served_sizes[size] = self.served_sizes.get(size, 0) + 1

    def observe(self, latency_s: float, detail: Detail) -> None:
        """A request from this gateway finished: adaptive mode learns from its latency."""
        if self.controller is not None and detail.final in OBSERVED_FINALS:
            self.controller.observe(latency_s)

    def pending(self, link: Hashable) -> int:
        buf = self._buffers.get(link)
        return len(buf.items) if buf is not None else 0

    def _flush(self, buf: _Buffer[T], reason: str, count: int, now: float) -> list[T]:
        """Send the oldest ``count`` messages. Messages left behind keep their generation, so
        the timer already armed for the oldest of them still flushes them in time."""
        batch = buf.items[:count]
        rest = buf.items[count:]
        buf.items = rest
        if not rest:
            buf.generation += 1
        if self._lo <= now < self._hi:
            n = len(batch)
            self.sizes[n] = self.sizes.get(n, 0) + 1
            self.flushes[reason] += 1
        return batch


def coalesce(
    first: list[T], queued: deque[Any], limit: int, take: Callable[[Any], list[T]]
) -> list[T]:
    """A worker about to serve ``first`` also takes the batches queued right behind it, as long
    as the total stays within ``limit`` (a consumer draining its queue). ``take`` turns a queued
    batch into the messages still worth serving (the driver drops expired ones)."""
    batch = first
    while queued and len(batch) < limit:
        more = take(queued[0])
        if len(batch) + len(more) > limit:
            break
        queued.popleft()
        batch = batch + more
    return batch


def batch_size_summary(batchers: list[Batcher[T]]) -> dict[str, object]:
    """Batch-size distribution and flush reasons over several gateways (for summary.json)."""
    flushes = dict.fromkeys(FLUSH_REASONS, 0)
    for b in batchers:
        for reason, count in b.flushes.items():
            flushes[reason] += count
    return {
        "sent": _distribution([b.sizes for b in batchers]),
        "served": _distribution([b.served_sizes for b in batchers]),
        "flushes": flushes,
    }


def _distribution(parts: list[dict[int, int]]) -> dict[str, object]:
    sizes: dict[int, int] = {}
    for part in parts:
        for size, count in part.items():
            sizes[size] = sizes.get(size, 0) + count
    batches = sum(sizes.values())
    messages = sum(s * c for s, c in sizes.items())
    expanded = sorted(sizes.items())

    def size_at(q: float) -> int | None:
        if not batches:
            return None
        rank = max(1, math.ceil(round(q * batches / 100, 9)))
        seen = 0
        for size, count in expanded:
            seen += count
            if seen >= rank:
                return size
        return expanded[-1][0]

    return {
        "batches": batches,
        "messages": messages,
        "mean_size": round(messages / batches, 4) if batches else None,
        "p50_size": size_at(50),
        "p99_size": size_at(99),
        "max_size": expanded[-1][0] if expanded else None,
        "sizes": {str(s): c for s, c in expanded},
    }
