"""Request outcomes.

Every offered request ends with exactly one final status, one of four: ``completed``, ``failed``,
``rejected`` or ``timed_out`` (so offered = completed + failed + rejected + timed_out). Finer
reasons (``rate_limited``, ``no_worker``, ``queue_full``, ...) are *details* that each belong to
exactly one final status, so sub-counts always add up.
"""

from __future__ import annotations

from enum import IntEnum


class Final(IntEnum):
    """The four final statuses; the int values are the codes stored in result records."""

    COMPLETED = 0
    FAILED = 1
    REJECTED = 2
    TIMED_OUT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Detail(IntEnum):
    """Why a request ended the way it did; each detail maps to one ``Final``."""

    OK = 0
    UNAUTHORIZED = 1  # bad or missing API key
    RATE_LIMITED = 2  # gateway token bucket empty
    QUEUE_FULL = 3  # every worker tried had a full queue
    NO_WORKER = 4  # no healthy worker hosts the agent type
    WORKER_ERROR = 5  # the worker answered with an error
    WORKER_LOST = 6  # the worker died or was cut off with the request in flight
    DEADLINE = 7  # no reply before the request's deadline
    UNKNOWN_TYPE = 8  # no worker ever registered the agent type
    ATTEMPT_TIMEOUT = 9  # the last attempt outlived its per-attempt timeout
    CONFLICT = 10  # the agent's state write was rejected: a concurrent write got there first

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def final(self) -> Final:
        return DETAIL_FINAL[self]


DETAIL_FINAL: dict[Detail, Final] = {
    Detail.OK: Final.COMPLETED,
    Detail.UNAUTHORIZED: Final.REJECTED,
    Detail.RATE_LIMITED: Final.REJECTED,
    Detail.QUEUE_FULL: Final.REJECTED,
    Detail.NO_WORKER: Final.FAILED,
    Detail.WORKER_ERROR: Final.FAILED,
    Detail.WORKER_LOST: Final.FAILED,
    Detail.DEADLINE: Final.TIMED_OUT,
    Detail.UNKNOWN_TYPE: Final.FAILED,
    Detail.ATTEMPT_TIMEOUT: Final.TIMED_OUT,
    Detail.CONFLICT: Final.FAILED,
}

#: Codes of final statuses indexed by detail code, for vectorised mapping of record columns.
FINAL_OF_DETAIL: tuple[int, ...] = tuple(int(DETAIL_FINAL[d]) for d in Detail)

#: Details a gateway may retry on another worker (the request never started, or failed there).
RETRYABLE: frozenset[Detail] = frozenset(
    {
        Detail.QUEUE_FULL,
        Detail.WORKER_ERROR,
        Detail.WORKER_LOST,
        Detail.ATTEMPT_TIMEOUT,
        Detail.CONFLICT,  # a retry re-reads the state and writes again: the usual CAS loop
    }
)

#: Retryable details whose retry goes back to the *same* worker: a compare-and-set conflict is
#: the agent's own state moving under it, not the worker failing, and the agent's home worker
#: (its session, its affinity) is where the retry belongs.
RETRY_SAME_WORKER: frozenset[Detail] = frozenset({Detail.CONFLICT})

#: Attempt endings that count against the worker's health in passive detection (outlier
#: ejection, circuit breakers): errors, lost connections and timeouts, as Envoy's
#: consecutive-gateway-failure counts them. A full queue is load shedding by a worker that
#: answered, so it counts as a sign of life, not of failure.
FAILURE_SIGNALS: frozenset[Detail] = frozenset(
    {Detail.WORKER_ERROR, Detail.WORKER_LOST, Detail.ATTEMPT_TIMEOUT, Detail.DEADLINE}
)


#: How bad an ending is, for aggregating several (a publish's deliveries): a timeout beats a
#: failure beats a rejection beats success; ties keep the first seen.
_FINAL_RANK = {Final.COMPLETED: 0, Final.REJECTED: 1, Final.FAILED: 2, Final.TIMED_OUT: 3}
SEVERITY: dict[Detail, int] = {d: _FINAL_RANK[DETAIL_FINAL[d]] for d in Detail}
