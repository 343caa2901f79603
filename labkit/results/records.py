"""Per-request records, kept columnar while a run is going.

A million requests must not cost a million Python objects, so each finished request appends a
handful of numbers to typed arrays; the DataFrame is built once at the end.
"""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

from labkit.core.outcomes import FINAL_OF_DETAIL, Detail, Final

KINDS = ("rpc", "publish")
#: the codes of KINDS, as drivers record them
RPC, PUBLISH = 0, 1


class RecordLog:
    """Append-only columns; drivers bind the ``append`` methods they need on the hot path."""

    def __init__(self) -> None:
        self.gateway = array("h")
        self.kind = array("b")
        self.agent_type = array("h")
        self.key = array("q")
        self.worker = array("q")  # index into worker names; -1 = none
        self.arrival = array("d")  # seconds, at the gateway
        self.end = array("d")  # seconds, when the final status was known at the gateway
        self.detail = array("b")
        self.attempts = array("h")
        self.fanout = array("q")

    def __len__(self) -> int:
        return len(self.arrival)

    def add(
        self,
        gateway: int,
        kind: int,
        agent_type: int,
        key: int,
        worker: int,
        arrival: float,
        end: float,
        detail: int,
        attempts: int,
        fanout: int,
    ) -> None:
        self.gateway.append(gateway)
        self.kind.append(kind)
        self.agent_type.append(agent_type)
        self.key.append(key)
        self.worker.append(worker)
        self.arrival.append(arrival)
        self.end.append(end)
        self.detail.append(detail)
        self.attempts.append(attempts)
        self.fanout.append(fanout)

    def frame(self, *, agent_types: list[str], workers: list[str], warmup_s: float) -> pd.DataFrame:
        """The records as a tidy DataFrame, ordered by gateway arrival."""
        arrival = np.frombuffer(self.arrival, dtype=np.float64)
        order = np.argsort(arrival, kind="stable")
        detail = np.frombuffer(self.detail, dtype=np.int8)[order]
        final = np.asarray(FINAL_OF_DETAIL, dtype=np.int8)[detail]
        worker = np.frombuffer(self.worker, dtype=np.int64)[order] if len(self) else np.zeros(0)
        # -1 (no worker) is the last category, ""; codes, not names: a million strings to
        # look up again would cost more than the rest of the frame
        worker_codes = np.where(worker < 0, len(workers), worker).astype(np.int64)
        arr = arrival[order]
        end = np.frombuffer(self.end, dtype=np.float64)[order]
        return pd.DataFrame(
            {
                "request": np.arange(len(arr), dtype=np.int64),
                "gateway": np.frombuffer(self.gateway, dtype=np.int16)[order],
                "kind": pd.Categorical.from_codes(
                    np.frombuffer(self.kind, dtype=np.int8)[order], categories=list(KINDS)
                ),
                "agent_type": pd.Categorical.from_codes(
                    np.frombuffer(self.agent_type, dtype=np.int16)[order], categories=agent_types
                ),
                "key": np.frombuffer(self.key, dtype=np.int64)[order],
                "worker": pd.Categorical.from_codes(worker_codes, categories=[*workers, ""]),
                "arrival_s": arr,
                "end_s": end,
                "latency_ms": (end - arr) * 1000.0,
                "status": pd.Categorical.from_codes(final, categories=[f.label for f in Final]),
                "detail": pd.Categorical.from_codes(detail, categories=[d.label for d in Detail]),
                "attempts": np.frombuffer(self.attempts, dtype=np.int16)[order],
                "fanout": np.frombuffer(self.fanout, dtype=np.int64)[order],
                "measured": arr >= warmup_s,
            }
        )
