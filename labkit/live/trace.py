"""Where a live RPC's time goes, hop by hop: stamps the processes add when a caller asks.

A live request's latency minus the worker's own time is one number that lumps together the
caller's gRPC stack, four loopback hops, the gateway's handling and every event loop's wait for
a CPU. To split it, a caller puts :data:`TRACE_KEY` in an ``RpcRequest``'s metadata; the gateway
then stamps when the request came in and went out to the worker, and when the reply came back
and went out to the caller, and a labkit worker stamps when its handler started and finished.
The stamps ride back in the ``RpcResponse``'s metadata, so tracing needs no side channel and
costs nothing for requests that do not ask (AutoGen callers never do).

The stamps are ``CLOCK_MONOTONIC`` seconds (``time.monotonic``; ``time.perf_counter`` is the
same clock on Linux), which every process of one machine shares: differences between processes
are meaningful on loopback, live mode's only setting, and meaningless between machines. AutoGen
workers do not stamp: the worker's three segments are then missing (NaN), though their sum is
still the time between the gateway's two stamps around it. (A live run's ``Results.timing`` has
rows only for requests a labkit worker answered: it needs the worker's own account of its time.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from itertools import pairwise

#: request metadata key that asks the gateway and labkit workers to stamp the RPC
TRACE_KEY = "labkit-trace"
GATEWAY_IN = "labkit-t-gateway-in"
GATEWAY_OUT = "labkit-t-gateway-out"
WORKER_IN = "labkit-t-worker-in"
WORKER_OUT = "labkit-t-worker-out"
GATEWAY_REPLY_IN = "labkit-t-gateway-reply-in"
GATEWAY_REPLY_OUT = "labkit-t-gateway-reply-out"
STAMPS = (GATEWAY_IN, GATEWAY_OUT, WORKER_IN, WORKER_OUT, GATEWAY_REPLY_IN, GATEWAY_REPLY_OUT)

#: the segments between the caller's send, the stamps and the caller's receipt, in path order:
#:
#: - ``to_gateway``: the caller's gRPC stack, the first loopback hop, the gateway's reader;
#: - ``gateway``: the gateway's handling (admission, routing, the retries' waits if any);
#: - ``to_worker``: the gateway's stream writer, the second hop, the worker's reader and loop;
#: - ``worker``: the worker's handler (queue + service), as ``labkit-worker-ms`` reports it;
#: - ``from_worker``: the worker's stream writer, the third hop, the gateway's reader;
#: - ``gateway_reply``: the gateway's handling of the reply;
#: - ``to_caller``: the gateway's writer, the fourth hop, the caller's reader and loop.
SEGMENTS = (
    "to_gateway",
    "gateway",
    "to_worker",
    "worker",
    "from_worker",
    "gateway_reply",
    "to_caller",
)
#: the segments that are not the worker's own time (what "added latency" is made of), and
#: where they sit in :func:`segments_ms`'s tuple
ADDED = tuple(s for s in SEGMENTS if s != "worker")
ADDED_INDEX = tuple(SEGMENTS.index(s) for s in ADDED)
#: the live ``Results.timing`` columns that hold them
ADDED_COLUMNS = tuple(f"{s}_ms" for s in ADDED)
#: and the one before them all: how late the load generator sent the request against its
#: schedule (a live run's latency counts from the scheduled arrival, as the simulator's does)
SEND_LAG_COLUMN = "send_lag_ms"


def stamp(metadata: MutableMapping[str, str], key: str, t: float) -> None:
    """Write one stamp; ``repr`` keeps every bit of the float."""
    metadata[key] = repr(t)


def segments_ms(sent: float, metadata: Mapping[str, str], received: float) -> tuple[float, ...]:
    """The :data:`SEGMENTS` of one traced RPC, in milliseconds, from the caller's own send and
    receipt times (``CLOCK_MONOTONIC`` seconds) and the reply's metadata; NaN where a stamp is
    missing or unreadable (an AutoGen worker's, or a reply from a gateway that does not trace)."""
    times = [sent]
    for key in STAMPS:
        try:
            times.append(float(metadata[key]))
        except (KeyError, ValueError):
            times.append(math.nan)
    times.append(received)
    return tuple((b - a) * 1000 for a, b in pairwise(times))
