"""Arrival processes and request attributes (keys, kinds, target types), pre-drawn in batches.

Every stream has its own random generator spawned from the scenario seed, so changing one knob
(say the balancing strategy) leaves the arrivals, job sizes and keys of a run unchanged: two
configurations are compared on the same traffic (common random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from labkit.distributions import BatchSampler, parse_distribution
from labkit.scenario.schema import ArrivalConfig, KeysConfig, WorkloadConfig


class IntSampler:
    """Draws integers from a finite distribution in batches (keys, agent types, topics)."""

    __slots__ = ("_batch", "_cdf", "_next", "_rng", "_values")

    def __init__(self, probabilities: np.ndarray, rng: np.random.Generator, batch: int = 8192):
        p = np.asarray(probabilities, dtype=np.float64)
        self._cdf = np.cumsum(p / p.sum())
        self._cdf[-1] = 1.0
        self._rng = rng
        self._batch = batch
        self._values = None
        self._next: Callable[[], int] = self._refill

    def _refill(self) -> int:
        idx = np.searchsorted(self._cdf, self._rng.random(self._batch), side="right")
        it = iter(idx.tolist())
        self._next = it.__next__
        return self._next()

    def __call__(self) -> int:
        try:
            return self._next()
        except StopIteration:
            return self._refill()


def zipf_probabilities(count: int, s: float) -> np.ndarray:
    """P(key k) ∝ 1/(k+1)^s over ``count`` keys (s = 0: uniform)."""
    ranks = np.arange(1, count + 1, dtype=np.float64)
    return ranks**-s


def key_sampler(cfg: KeysConfig, rng: np.random.Generator) -> IntSampler:
    return IntSampler(zipf_probabilities(cfg.count, cfg.zipf_s), rng)


#: arrival times drawn per refill (the gap sampler's batch, so both ways draw the same numbers)
BLOCK = 8192


class Arrivals:
    """Next arrival time of an open-loop process; ``None`` once past ``end_s``.

    Time-varying rates use thinning (Lewis & Shedler): candidates at the peak rate, each kept
    with probability rate(t)/peak.
    """

    def __init__(self, cfg: ArrivalConfig, end_s: float, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.end_s = end_s
        peak = cfg.peak_rps
        self._rng = rng
        self._gap_dist = parse_distribution({"dist": "exponential", "mean": 1.0 / peak}, unit="")
        self._gap = BatchSampler(self._gap_dist, rng, BLOCK)
        self._accept = BatchSampler(
            parse_distribution({"dist": "uniform", "low": 0, "high": 1}, unit=""), rng
        )
        self._peak = peak
        self._t = 0.0
        self._rate: Callable[[float], float] | None = None
        if cfg.process == "ramp":
            span = end_s if end_s > 0 else 1.0
            self._rate = lambda t: cfg.from_rps + (cfg.to_rps - cfg.from_rps) * min(t / span, 1.0)
        elif cfg.process == "diurnal":
            w = 2 * math.pi / cfg.period_s
            self._rate = lambda t: cfg.mean_rps * (1 + cfg.amplitude * math.sin(w * t))
        elif cfg.process == "mmpp":
            self._rate = self._mmpp_rate(cfg, end_s, rng)

    @staticmethod
    def _mmpp_rate(cfg: ArrivalConfig, end_s: float, rng: np.random.Generator):  # type: ignore[no-untyped-def]
        """Pre-draw the modulating chain's switch times over the run (states cycle in order)."""
        switches = [0.0]
        states = [0]
        t, state = 0.0, 0
        n = len(cfg.rates_rps)
        while t < end_s:
            t += rng.exponential(cfg.mean_durations_s[state])
            state = (state + 1) % n
            switches.append(t)
            states.append(state)
        rates = [cfg.rates_rps[s] for s in states]
        times = np.asarray(switches)

        def rate(t: float) -> float:
            return rates[int(np.searchsorted(times, t, side="right")) - 1]

        return rate

    def block(self) -> list[float]:
        """The next arrival times, up to ``BLOCK`` of them; empty once past ``end_s``.

        The same times as calling ``next`` until it returns None, for a driver that wants no
        Python call per arrival (use one or the other on an instance, not both). A homogeneous
        Poisson process is summed in numpy: ``cumsum`` adds in order, so the times are the
        same floats as the one-at-a-time sum.
        """
        if self._rate is not None:
            out: list[float] = []
            while len(out) < BLOCK:
                t = self.next()
                if t is None:
                    break
                out.append(t)
            return out
        if self._t >= self.end_s:
            return []
        # the draws the gap sampler would make, one refill's worth
        gaps = self._gap_dist.sample(self._rng, BLOCK)
        times = np.cumsum(np.concatenate(([self._t], gaps)))[1:]
        self._t = float(times[-1])
        return times[: int(np.searchsorted(times, self.end_s))].tolist()

    def next(self) -> float | None:
        rate = self._rate
        if rate is None:  # homogeneous Poisson: no thinning
            t = self._t + self._gap()
            self._t = t
            return t if t < self.end_s else None
        t = self._t
        while True:
            t += self._gap()
            if t >= self.end_s:
                self._t = t
                return None
            if rate is None or self._accept() * self._peak <= rate(t):
                self._t = t
                return t


#: indices of the seeded random streams shared by both drivers (children of
#: ``SeedSequence(seed).spawn(STREAM_COUNT)``), so a live run draws the same worker speeds,
#: service times, keys, target types and arrival times as the simulated run of one scenario
STREAM_COUNT = 20
STREAM_SPEEDS, STREAM_SERVICE, STREAM_KEYS, STREAM_TARGET, STREAM_ARRIVALS = 0, 3, 5, 7, 10
STREAM_COIN, STREAM_TOPIC = 6, 8  # publish-or-not (and other coins), the topic of a publish


class Streams:
    """The workload's random streams for one seed."""

    def __init__(self, seed: int) -> None:
        seeds = np.random.SeedSequence(seed).spawn(STREAM_COUNT)
        self.all = [np.random.default_rng(s) for s in seeds]
        self.speeds = self.all[STREAM_SPEEDS]
        self.service = self.all[STREAM_SERVICE]
        self.keys = self.all[STREAM_KEYS]
        self.target = self.all[STREAM_TARGET]
        self.arrivals = self.all[STREAM_ARRIVALS]
        self.py_seeds = [int(s.generate_state(1)[0]) for s in seeds]


def workload_streams(seed: int) -> Streams:
    return Streams(seed)


class RequestMix:
    """What each arrival is — its agent key, RPC or publish, target type, publish topic — drawn
    from the shared streams in one fixed order, so the simulator and the live load generator
    turn one seed into the same traffic. ``coin`` is the uniform stream other per-request
    coins (the simulator's unauthorised share) draw from after the publish coin."""

    def __init__(self, wl: WorkloadConfig, agent_types: Sequence[str], streams: Streams) -> None:
        self.keys = key_sampler(wl.keys, streams.keys)
        self.coin = BatchSampler(
            parse_distribution({"dist": "uniform", "low": 0, "high": 1}, unit=""),
            streams.all[STREAM_COIN],
        )
        shares = wl.target_types or {t: 1.0 for t in agent_types}
        self.target = IntSampler(
            np.array([shares.get(t, 0.0) for t in agent_types]), streams.target
        )
        self.multi_type = len(agent_types) > 1
        self.topics = list(wl.topics)
        self.topic_pick = IntSampler(np.ones(max(1, len(self.topics))), streams.all[STREAM_TOPIC])
        self.publish_fraction = wl.publish_fraction

    def next(self) -> tuple[int, int]:
        """(key index, agent type index); the type is -1 for a publish."""
        key = self.keys()
        if self.publish_fraction and self.coin() < self.publish_fraction:
            return key, -1
        return key, (self.target() if self.multi_type else 0)

    def topic(self) -> str:
        """The topic type of a publish."""
        return self.topics[self.topic_pick()]
