"""Per-request records, kept as rows of one flat array while a run is going.

A million requests must not cost a million Python objects, so each finished request appends one
row of numbers to a typed array; the DataFrame is built once at the end.
"""

from __future__ import annotations

import struct
from array import array

import numpy as np
import pandas as pd

from labkit.core.outcomes import FINAL_OF_DETAIL, Detail, Final

KINDS = ("rpc", "publish")
#: the codes of KINDS, as drivers record them
RPC, PUBLISH = 0, 1

#: the fields of a record, in row order
FIELDS = (
    "gateway",
    "kind",
    "agent_type",
    "key",
    "worker",  # index into worker names; -1 = none
    "arrival",  # seconds, at the gateway
    "end",  # seconds, when the final status was known at the gateway
    "detail",
    "attempts",
    "fanout",
)
WIDTH = len(FIELDS)
_COLUMN = {name: i for i, name in enumerate(FIELDS)}


#: packs one record (the values in ``FIELDS`` order) into the bytes of a row
pack_row = struct.Struct(f"{WIDTH}d").pack


class RecordLog:
    """Append-only rows of ``FIELDS``, all in one ``array('d')``.

    One row per request instead of an append per column: the codes and counts are integers
    far below 2**53, which a double holds exactly, so nothing is lost. Drivers on the hot path
    bind ``add_row`` and pass it ``pack_row(...)``: packing with ``struct`` and appending the
    bytes costs half of ``array.extend`` with a tuple.
    """

    def __init__(self) -> None:
        self.rows = array("d")
        self.add_row = self.rows.frombytes

    def __len__(self) -> int:
        return len(self.rows) // WIDTH

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
        self.add_row(
            pack_row(gateway, kind, agent_type, key, worker, arrival, end, detail, attempts, fanout)
        )

    def table(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Records ``start:stop`` as a rows × ``WIDTH`` float array (a copy: the log can grow)."""
        stop = len(self) if stop is None else stop
        flat = np.frombuffer(self.rows[start * WIDTH : stop * WIDTH], dtype=np.float64)
        return flat.reshape(-1, WIDTH)

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One field of records ``start:stop`` (floats; the integer fields hold whole numbers)."""
        return self.table(start, stop)[:, _COLUMN[name]]

    def remap_workers(self, remap: list[int]) -> None:
        """Rewrite the worker indices: record worker ``i`` becomes ``remap[i]`` (-1 stays)."""
        table = self.table()
        worker = table[:, _COLUMN["worker"]].astype(np.int64)
        mapped = np.asarray(remap, dtype=np.int64)[np.maximum(worker, 0)] if len(remap) else worker
        table[:, _COLUMN["worker"]] = np.where(worker >= 0, mapped, -1)
        self.rows = array("d", table.tobytes())
        self.add_row = self.rows.frombytes

    def frame(self, *, agent_types: list[str], workers: list[str], warmup_s: float) -> pd.DataFrame:
        """The records as a tidy DataFrame, ordered by gateway arrival."""
        # a view of the rows (no copy: a million rows are 80 MB), read a column at a time
        rows = np.frombuffer(self.rows, dtype=np.float64).reshape(-1, WIDTH)
        order = np.argsort(rows[:, _COLUMN["arrival"]], kind="stable")

        def floats(name: str) -> np.ndarray:
            return rows[order, _COLUMN[name]]

        def ints(name: str, dtype: type) -> np.ndarray:
            return floats(name).astype(dtype)

        detail = ints("detail", np.int8)
        final = np.asarray(FINAL_OF_DETAIL, dtype=np.int8)[detail]
        worker = ints("worker", np.int64)
        # -1 (no worker) is the last category, ""; codes, not names: a million strings to
        # look up again would cost more than the rest of the frame
        worker_codes = np.where(worker < 0, len(workers), worker).astype(np.int64)
        arr = floats("arrival")
        end = floats("end")
        return pd.DataFrame(
            {
                "request": np.arange(len(arr), dtype=np.int64),
                "gateway": ints("gateway", np.int16),
                "kind": pd.Categorical.from_codes(ints("kind", np.int8), categories=list(KINDS)),
                "agent_type": pd.Categorical.from_codes(
                    ints("agent_type", np.int16), categories=agent_types
                ),
                "key": ints("key", np.int64),
                "worker": pd.Categorical.from_codes(worker_codes, categories=[*workers, ""]),
                "arrival_s": arr,
                "end_s": end,
                "latency_ms": (end - arr) * 1000.0,
                "status": pd.Categorical.from_codes(final, categories=[f.label for f in Final]),
                "detail": pd.Categorical.from_codes(detail, categories=[d.label for d in Detail]),
                "attempts": ints("attempts", np.int16),
                "fanout": ints("fanout", np.int64),
                "measured": arr >= warmup_s,
            }
        )
