"""Per-agent state replicated over N replicas: the WARS model of PBS (Bailis et al., VLDB 2012).

Why a model and not a database: the question a designer asks is "if agents read their state from
r of n replicas and write it to w, how often does an agent act on stale state, how stale, and what
does each consistency level cost in latency?" Bailis et al. ("Probabilistically Bounded Staleness
for Practical Partial Quorums", VLDB 2012) answer it with the **WARS** model, which this store
implements one operation at a time so the simulator can charge each request the latency it would
see and count the staleness it would suffer.

WARS: a write is sent by the coordinator (the key's *primary*, replica 0) to the replicas; the
message to replica i takes ``W_i`` and its acknowledgement ``A_i``; a read request takes ``R_i``
and the response ``S_i``. Every delay is an independent draw from :class:`WarsSamplers`; there is
no queueing at the replicas (the simulator models queueing elsewhere). A write commits (returns to
the writer) when w acknowledgements are back: after the w-th smallest ``W_i + A_i``; replica i
holds the write from ``W_i`` after it was issued. A read takes the first r responses, by
``R_i + S_i``; replica i answers with the newest version it held when the request reached it,
``R_i`` after the read started; the reader keeps the newest of the r answers. Replica state is
the highest version number arrived, so the store is last-write-wins by issue order.

Models (``StateConfig.model``):

* ``strong``: r + w > n. Any read quorum intersects the write quorum of every committed write, so
  a read never misses a version committed before it started. Costs the slower quorums.
* ``eventual``: any r, w (typically 1 and 1): fast, but a read can miss recent writes whose
  propagation to the replicas it asked is still in flight (or never happens with
  ``write_fanout="quorum"``).
* ``session``: eventual reads plus read-your-writes through a session token (the highest version
  the session wrote or read). Writes are acknowledged by the primary alone (latency
  ``W_0 + A_0``); a read whose quorum answer is older than the token is re-read from the primary,
  which holds every acknowledged write of the session. The re-read costs ``R_0 + S_0`` more.
  The guarantee covers writes the session waited for (a read issued before its own write was
  acknowledged can miss it, as in any real system), and it is read-your-writes only: a token
  raised by a *read* of another session's write is honoured only as far as the primary has
  that write, so monotonic reads can still fail. With ``write_fanout="quorum"`` a session write
  goes to the primary and the w - 1 other replicas that acknowledge fastest.

Words used in results:

* **stale**: the read returned a version older than some version that had *committed* (returned
  to its writer) before the read started. Versions still in flight when the read starts do not
  count: no consistency level promises them.
* **behind**: how many such committed versions are newer than the version returned.
  **k-staleness** here is P(behind >= k): the read missed the last k committed writes. PBS §3
  states the complement, P(a read returns one of the last k versions) = 1 - (C(n-w, r) /
  C(n, r))^k for ``write_fanout="quorum"``; :func:`labkit.theory.pbs_k_staleness` gives the
  (C(n-w, r) / C(n, r))^k that ``summary()["k_staleness"]`` estimates.
* **t-visibility**: P(a read started t after the newest commit is fresh). It grows with t as
  the write propagates; PBS §4 computes it by Monte Carlo over WARS
  (:func:`labkit.theory.wars_t_visibility`). ``ReadResult.delta_s`` is that t for each read.

Conflicts (``StateConfig.conflict``): an agent's handler reads its state, works, then writes; the
write's ``base`` is the version it read. Any version newer than ``base`` already issued for the
key is *concurrent* with it (the writer never saw it). A blind write (no ``base``) takes as base
the version the primary holds when it is issued.

* ``last_write_wins``: applied anyway; outcome "overwritten": the concurrent updates are lost
  (lost updates, the default behaviour of Dynamo-style stores with LWW timestamps).
* ``merge``: field-level merge (a CRDT-like map of fields): each write updates one of
  ``fields`` fields, uniformly; if no concurrent version touched the same field both updates
  survive ("merged"), otherwise the older one is lost ("overwritten").
* ``reject``: compare-and-set at the primary: the write is refused ("rejected", no version, the
  writer waited ``W_0 + A_0``) if a concurrent version had already reached the primary when the
  write got there. A concurrent version still in flight to the primary is invisible to the CAS:
  the write is applied and counted "overwritten" (an undetected conflict). A real CAS system
  would serialise writes at the primary to close this window; WARS has no such ordering.

Memory: per key only a short window of versions is kept. A version older than every replica's
current version (as of the latest write) can never be read again and is dropped exactly; beyond
that the window is capped at ``max_versions``, and a version pushed out by the cap is treated as
having arrived at the replicas it was sent to (and as committed, when counting ``behind``), an
approximation that only matters when ``max_versions`` newer writes are issued before it lands.

Sans-I/O like the rest of ``labkit.core``: callers pass ``now`` (seconds, non-decreasing) and get
latencies back; all randomness comes from the samplers and the ``random.Random`` given.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

STATE_MODELS = ("strong", "eventual", "session")
CONFLICT_POLICIES = ("last_write_wins", "merge", "reject")
WRITE_FANOUTS = ("all", "quorum")


@dataclass(frozen=True)
class StateConfig:
    """How agent state is replicated, read and written.

    ``model``: ``strong`` needs r + w > n and waits for the quorums; ``eventual`` allows partial
    quorums (any r, w) with the rest of the replicas updated asynchronously; ``session`` is
    eventual plus read-your-writes for a session (the worker hosting the agent) through a session
    token: a read that comes back older than the session's own last write is re-read from the
    key's primary replica, which always has the session's writes.
    """

    model: str = "eventual"
    n: int = 3
    r: int = 1
    w: int = 1
    conflict: str = "last_write_wins"
    #: merge: fields in an agent's state; each write updates one, drawn uniformly
    fields: int = 8
    #: "all": every write is sent to all n replicas (Dynamo); "quorum": only to the w replicas
    #: that acknowledge it, with no anti-entropy (the setting of PBS's k-staleness closed form)
    write_fanout: str = "all"
    #: fraction of requests whose handling reads the agent's state (before the work)
    read_fraction: float = 1.0
    #: fraction of requests whose handling writes the agent's state (after the work)
    write_fraction: float = 0.5
    #: versions kept per key (older ones are dropped; only matters with write_fanout "quorum",
    #: where no version ever reaches every replica)
    max_versions: int = 64

    def __post_init__(self) -> None:
        if self.model not in STATE_MODELS:
            raise ValueError(f"model must be one of {', '.join(STATE_MODELS)}, got {self.model!r}")
        if self.conflict not in CONFLICT_POLICIES:
            raise ValueError(
                f"conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {self.conflict!r}"
            )
        if self.write_fanout not in WRITE_FANOUTS:
            raise ValueError(
                f"write_fanout must be one of {', '.join(WRITE_FANOUTS)}, got {self.write_fanout!r}"
            )
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not 1 <= self.r <= self.n:
            raise ValueError(f"r must be between 1 and n ({self.n}), got {self.r}")
        if not 1 <= self.w <= self.n:
            raise ValueError(f"w must be between 1 and n ({self.n}), got {self.w}")
        if self.model == "strong" and self.r + self.w <= self.n:
            raise ValueError(
                f"strong consistency needs r + w > n, got r={self.r}, w={self.w}, n={self.n}"
            )
        if self.fields < 1:
            raise ValueError(f"fields must be >= 1, got {self.fields}")
        for name in ("read_fraction", "write_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.max_versions < 2:
            raise ValueError(f"max_versions must be >= 2, got {self.max_versions}")


@dataclass(frozen=True, slots=True)
class WarsSamplers:
    """One draw (milliseconds) per call of each WARS delay: coordinator→replica write (W),
    replica→coordinator ack (A), coordinator→replica read (R), replica→coordinator response (S)."""

    write: Callable[[], float]
    ack: Callable[[], float]
    read: Callable[[], float]
    response: Callable[[], float]


#: ``nan`` in the ``reads_delta_ms`` column: no version had committed when the read started.
_NAN = math.nan
_INF = math.inf


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One read as the agent saw it."""

    latency_s: float  # what the reader waited (incl. a session re-read)
    version: int  # version returned (0 = the initial state, before any write)
    behind: int  # committed versions (commit time <= read start) newer than ``version``
    delta_s: float | None  # read start minus commit time of the newest committed version
    fresh: bool  # behind == 0
    session_retry: bool  # session model: quorum answer older than the token, re-read at primary


@dataclass(frozen=True, slots=True)
class WriteResult:
    """One write as the agent saw it."""

    latency_s: float
    version: int | None  # None when rejected
    outcome: str  # "ok" | "overwritten" | "merged" | "rejected"
    commit_s: float | None  # absolute commit time (None when rejected)


class _Key:
    """The versions of one key still worth knowing about.

    ``versions`` holds ``(number, commit_s, arrivals)`` tuples in number order, numbers
    contiguous from ``dropped + 1`` to ``latest``; ``arrivals[i]`` is the absolute time the
    version reaches replica i (``inf``: never). Tuples, not objects: a write creates one and
    nothing mutates it.
    """

    __slots__ = ("dropped", "dropped_commit", "floor", "latest", "touched", "versions")

    def __init__(self, n: int) -> None:
        self.versions: list[tuple[int, float, list[float]]] = []
        self.latest = 0  # highest version number issued
        self.dropped = 0  # every version <= this one has left the window
        self.dropped_commit = _INF  # commit time of version ``dropped``
        #: per replica, the newest version pushed out by the ``max_versions`` cap that was sent
        #: to it: treated as arrived (see the module docstring)
        self.floor = [0] * n
        #: merge: per field, the newest version that updated it; a write conflicts on its field
        #: iff that version is newer than the write's base (sparse: ``fields`` may be large)
        self.touched: dict[int, int] = {}

    def visible(self, replica: int, t: float) -> int:
        """The version replica ``replica`` holds at time ``t``: the newest arrived by then."""
        for number, _commit, arrivals in reversed(self.versions):
            if arrivals[replica] <= t:
                return number
        return self.floor[replica]


class StateStore:
    """Keys replicated over ``config.n`` replicas, read and written under the WARS model.

    One call per operation: :meth:`write` and :meth:`read` draw the operation's delays, decide
    what it sees or does, and log it to the columnar lists (``reads_*``, ``writes_*``) that the
    results layer turns into a DataFrame; :meth:`summary` gives the counts. Draw order, for
    reproducibility: a write draws ``W_0..W_{n-1}`` then ``A_0..A_{n-1}``, then (``merge`` only)
    its field from ``rng``; a read draws ``R_i, S_i`` per replica in order, then ``R_0, S_0`` for
    a session re-read.

    Session tokens are kept per (session, key) for the life of the store: one int per pair.
    """

    def __init__(self, config: StateConfig, samplers: WarsSamplers, rng: random.Random) -> None:
        self.config = config
        self.samplers = samplers
        self._rng = rng
        self._n = config.n
        self._r = config.r
        self._w = config.w
        self._session_model = config.model == "session"
        self._quorum_fanout = config.write_fanout == "quorum"
        self._conflict = config.conflict
        self._max_versions = config.max_versions
        self._keys: dict[str, _Key] = {}
        self._tokens: dict[tuple[str, str], int] = {}
        # looked up once: read/write run once per simulated request
        self._draw_w = samplers.write
        self._draw_a = samplers.ack
        self._draw_r = samplers.read
        self._draw_s = samplers.response

        self.reads_t: list[float] = []
        self.reads_latency_ms: list[float] = []
        self.reads_behind: list[int] = []
        self.reads_delta_ms: list[float] = []
        self.reads_session_retry: list[bool] = []
        self.writes_t: list[float] = []
        self.writes_latency_ms: list[float] = []
        self.writes_outcome: list[str] = []

        self._stale = [0, 0, 0]  # reads with behind >= 1, 2, 3
        self._session_retries = 0
        self._conflicts = {"overwritten": 0, "merged": 0, "rejected": 0}

    # -- inspection ---------------------------------------------------------------------------

    def versions_kept(self, key: str) -> int:
        """How many versions of ``key`` the store still holds (memory is bounded per key)."""
        state = self._keys.get(key)
        return len(state.versions) if state is not None else 0

    def latest_version(self, key: str) -> int:
        """The newest version number issued for ``key`` (0 before any write)."""
        state = self._keys.get(key)
        return state.latest if state is not None else 0

    def plan(self, read_coin: float, write_coin: float) -> tuple[bool, bool]:
        """Does a request read its agent's state before its work, and write it after?
        The caller draws the two uniform coins (so the randomness stays in its streams)."""
        config = self.config
        return read_coin < config.read_fraction, write_coin < config.write_fraction

    def forget_session(self, session: str) -> None:
        """The session's holder died (a worker crash): its tokens die with it, so after a
        restart it no longer gets read-your-writes for what it wrote before."""
        for token_key in [k for k in self._tokens if k[0] == session]:
            del self._tokens[token_key]

    def session_token(self, session: str, key: str) -> int:
        """The highest version of ``key`` that ``session`` wrote or read (0 if none)."""
        return self._tokens.get((session, key), 0)

    # -- operations ---------------------------------------------------------------------------

    def write(
        self, key: str, now: float, session: str | None = None, base: int | None = None
    ) -> WriteResult:
        """Write ``key`` at ``now``, having read version ``base`` before (None: a blind write).

        A blind write's base is what the primary holds at ``now``: the writer overwrites
        whatever it would have seen had it looked, and conflicts only with versions still in
        flight to the primary.
        """
        n = self._n
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key(n)
        draw_w = self._draw_w
        draw_a = self._draw_a
        w_ms = [draw_w() for _ in range(n)]
        a_ms = [draw_a() for _ in range(n)]
        conflict = self._conflict
        field = self._rng.randrange(self.config.fields) if conflict == "merge" else -1
        if base is None:
            base = state.visible(0, now)
        elif not 0 <= base <= state.latest:
            raise ValueError(
                f"base must be a version of {key!r} already issued (0..{state.latest}), got {base}"
            )

        outcome = "ok"
        if base < state.latest:  # concurrent with every version in (base, latest]
            if conflict == "last_write_wins":
                outcome = "overwritten"
            elif conflict == "merge":
                outcome = "overwritten" if state.touched.get(field, 0) > base else "merged"
            elif state.visible(0, now + w_ms[0] / 1000.0) > base:  # reject: the CAS sees one
                latency_ms = w_ms[0] + a_ms[0]
                self._conflicts["rejected"] += 1
                self._log_write(now, latency_ms, "rejected")
                return WriteResult(latency_ms / 1000.0, None, "rejected", None)
            else:  # reject, but the concurrent versions are still in flight to the primary
                outcome = "overwritten"

        round_trip = [w_ms[i] + a_ms[i] for i in range(n)]
        if self._session_model:
            latency_ms = round_trip[0]
        elif self._w == 1:
            latency_ms = min(round_trip)
        else:
            latency_ms = sorted(round_trip)[self._w - 1]
        if self._quorum_fanout:
            arrivals = [_INF] * n
            for i in self._write_quorum(round_trip):
                arrivals[i] = now + w_ms[i] / 1000.0
        else:
            arrivals = [now + x / 1000.0 for x in w_ms]
        commit = now + latency_ms / 1000.0
        version = state.latest + 1
        state.latest = version
        state.versions.append((version, commit, arrivals))
        if field >= 0:
            state.touched[field] = version
        if session is not None:
            token_key = (session, key)
            if self._tokens.get(token_key, 0) < version:
                self._tokens[token_key] = version
        if outcome != "ok":
            self._conflicts[outcome] += 1
        self._log_write(now, latency_ms, outcome)
        self._prune(state, now)
        return WriteResult(latency_ms / 1000.0, version, outcome, commit)

    def read(self, key: str, now: float, session: str | None = None) -> ReadResult:
        """Read ``key`` at ``now``: the newest version among the first r replicas to answer.

        Under ``session``, when that is older than the session's token the reader asks the
        primary too and returns the newer of the two answers (it holds both).
        """
        n = self._n
        r = self._r
        state = self._keys.get(key)
        draw_r = self._draw_r
        draw_s = self._draw_s
        r_ms = [0.0] * n
        round_trip = [0.0] * n
        for i in range(n):
            x = draw_r()
            r_ms[i] = x
            round_trip[i] = x + draw_s()

        if r == 1:
            first = min(range(n), key=round_trip.__getitem__)
            latency_ms = round_trip[first]
            version = state.visible(first, now + r_ms[first] / 1000.0) if state is not None else 0
        else:
            answered = sorted(range(n), key=round_trip.__getitem__)[:r]
            latency_ms = round_trip[answered[-1]]
            version = 0
            if state is not None:
                for i in answered:
                    v = state.visible(i, now + r_ms[i] / 1000.0)
                    if v > version:
                        version = v

        retry = False
        token = 0
        if session is not None:
            token_key = (session, key)
            token = self._tokens.get(token_key, 0)
            if self._session_model and token > version and state is not None:
                rp = draw_r()
                primary = state.visible(0, now + (latency_ms + rp) / 1000.0)
                latency_ms += rp + draw_s()
                # the reader holds both answers and returns the newer
                if primary > version:
                    version = primary
                retry = True
                self._session_retries += 1
            if version > token:
                self._tokens[token_key] = version

        behind = 0
        delta_ms = _NAN
        delta_s: float | None = None
        if state is not None:
            newest_commit: float | None = None
            for number, commit, _arrivals in reversed(state.versions):
                if number <= version and newest_commit is not None:
                    break  # nothing older can be behind, and the newest commit is known
                if commit <= now:
                    if newest_commit is None:
                        newest_commit = commit
                    if number > version:
                        behind += 1
            if state.dropped > version:  # pushed out by the cap: assumed committed
                behind += state.dropped - version
            if newest_commit is None and state.dropped and state.dropped_commit <= now:
                newest_commit = state.dropped_commit
            if newest_commit is not None:
                delta_s = now - newest_commit
                delta_ms = delta_s * 1000.0
        if behind:
            stale = self._stale
            stale[0] += 1
            if behind >= 2:
                stale[1] += 1
                if behind >= 3:
                    stale[2] += 1
        self.reads_t.append(now)
        self.reads_latency_ms.append(latency_ms)
        self.reads_behind.append(behind)
        self.reads_delta_ms.append(delta_ms)
        self.reads_session_retry.append(retry)
        return ReadResult(latency_ms / 1000.0, version, behind, delta_s, behind == 0, retry)

    def summary(self) -> dict[str, object]:
        """Counts over every operation so far, as plain JSON-able numbers.

        Latency percentiles are left to the caller, who has the op logs and numpy.
        """
        cfg = self.config
        reads = len(self.reads_t)
        stale = self._stale
        return {
            "model": cfg.model,
            "n": cfg.n,
            "r": cfg.r,
            "w": cfg.w,
            "conflict": cfg.conflict,
            "write_fanout": cfg.write_fanout,
            "reads": reads,
            "writes": len(self.writes_t),
            "stale_reads": stale[0],
            "stale_fraction": stale[0] / reads if reads else None,
            "k_staleness": {str(k + 1): (stale[k] / reads if reads else None) for k in range(3)},
            "conflicts": dict(self._conflicts),
            "session_retries": self._session_retries,
        }

    # -- internals ----------------------------------------------------------------------------

    def _write_quorum(self, round_trip: list[float]) -> list[int]:
        """The replicas that ever get a write under ``write_fanout="quorum"``: the w fastest to
        acknowledge. Under ``session`` the primary acknowledges, so it is always one of them."""
        w = self._w
        if self._session_model:
            others = sorted(range(1, self._n), key=round_trip.__getitem__)
            return [0, *others[: w - 1]]
        return sorted(range(self._n), key=round_trip.__getitem__)[:w]

    def _log_write(self, now: float, latency_ms: float, outcome: str) -> None:
        self.writes_t.append(now)
        self.writes_latency_ms.append(latency_ms)
        self.writes_outcome.append(outcome)

    def _prune(self, state: _Key, now: float) -> None:
        """Forget versions no read can return any more, then cap the window.

        Every replica holds at least its current version from ``now`` on (times never go back),
        so versions older than the oldest of those are unreachable: dropping them is exact.
        Conflict detection does not need them either: a base older than a dropped version is
        older than the primary's current version, which is kept (or is in ``floor``), and the
        per-field ``touched`` table stands in for them under ``merge``.
        """
        versions = state.versions
        # the oldest version still in the window can go only if every replica holds a newer one:
        # stop at the first replica that does not (usually the first one asked)
        oldest_kept = state.dropped + 1
        oldest_current = state.latest
        for i in range(self._n):
            current = state.visible(i, now)
            if current <= oldest_kept:
                oldest_current = oldest_kept
                break
            if current < oldest_current:
                oldest_current = current
        drop = oldest_current - oldest_kept  # index of oldest_current in the window
        if drop > 0:
            state.dropped_commit = versions[drop - 1][1]
            state.dropped = versions[drop - 1][0]
            del versions[:drop]
        excess = len(versions) - self._max_versions
        if excess > 0:
            floor = state.floor
            for number, _commit, arrivals in versions[:excess]:
                for i, arrived in enumerate(arrivals):
                    if arrived != _INF and number > floor[i]:
                        floor[i] = number
            state.dropped_commit = versions[excess - 1][1]
            state.dropped = versions[excess - 1][0]
            del versions[:excess]
