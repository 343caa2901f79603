"""The failure tables of the results schema: faults, events, health timeline.

Both drivers collect plain rows and codes while running and build these frames once at the end,
so the columns (and their categories) are defined here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labkit.core.faults import ACTUAL_STATES, FaultInstance
from labkit.core.gateway import GATEWAY_STATES
from labkit.core.registry import Health

#: registry verdicts, in the order of the codes a driver records
REGISTRY_STATES: tuple[Health, ...] = (Health.HEALTHY, Health.SUSPECT, Health.DOWN)

FAULT_COLUMNS = ["fault", "kind", "origin", "start_s", "end_s", "workers", "params"]
EVENT_COLUMNS = ["t_s", "worker", "source", "event", "gateway"]
HEALTH_COLUMNS = ["t_s", "worker", "actual", "registry", "gateway"]


def faults_frame(faults: Sequence[FaultInstance]) -> pd.DataFrame:
    """One row per fault instance; ``end_s`` NaN when it outlasted the run."""
    rows = [
        {
            "fault": f.fault,
            "kind": f.kind,
            "origin": f.origin,
            "start_s": f.start_s,
            "end_s": f.end_s if f.end_s is not None else np.nan,
            "workers": tuple(f.workers),
            "params": dict(f.params),
        }
        for f in faults
    ]
    frame = pd.DataFrame(rows, columns=FAULT_COLUMNS)
    return frame.astype({"start_s": float, "end_s": float})


def events_frame(events: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Detection and fault events in time order (ties keep the order they happened in)."""
    frame = pd.DataFrame(list(events), columns=EVENT_COLUMNS)
    frame = frame.astype({"t_s": float})
    return frame.sort_values("t_s", kind="stable").reset_index(drop=True)


def health_frame(
    times: Sequence[float], codes: Sequence[np.ndarray], workers: Sequence[str]
) -> pd.DataFrame:
    """Long format, one row per worker per sample: truth, registry verdict, gateway view.

    ``codes[k]`` is a 3 × workers int8 array sampled at ``times[k]``: rows index
    ``ACTUAL_STATES``, ``REGISTRY_STATES`` and ``GATEWAY_STATES``.
    """
    n = len(workers)
    if not codes or n == 0:
        return pd.DataFrame(
            {
                "t_s": pd.Series(dtype=float),
                "worker": pd.Categorical([], categories=list(workers)),
                "actual": pd.Categorical([], categories=list(ACTUAL_STATES)),
                "registry": pd.Categorical([], categories=[str(h) for h in REGISTRY_STATES]),
                "gateway": pd.Categorical([], categories=list(GATEWAY_STATES)),
            }
        )
    stacked = np.stack(codes)  # samples × 3 × workers
    samples = stacked.shape[0]
    return pd.DataFrame(
        {
            "t_s": np.repeat(np.asarray(times, dtype=float), n),
            "worker": pd.Categorical.from_codes(
                np.tile(np.arange(n), samples), categories=list(workers)
            ),
            "actual": pd.Categorical.from_codes(
                stacked[:, 0, :].ravel(), categories=list(ACTUAL_STATES)
            ),
            "registry": pd.Categorical.from_codes(
                stacked[:, 1, :].ravel(), categories=[str(h) for h in REGISTRY_STATES]
            ),
            "gateway": pd.Categorical.from_codes(
                stacked[:, 2, :].ravel(), categories=list(GATEWAY_STATES)
            ),
        }
    )


def load_reports_frame(
    times: Sequence[float],
    worker_codes: Sequence[int],
    utilization: Sequence[float],
    active: Sequence[int],
    workers: Sequence[str],
) -> pd.DataFrame:
    """One row per load report a worker's heartbeat carried: what the registry (and every
    load-aware balancer) was told — utilization over the last interval and requests active.
    A worker that is down or cut off sends none, so its rows stop."""
    return pd.DataFrame(
        {
            "t_s": np.asarray(times, dtype=float),
            "worker": pd.Categorical.from_codes(
                np.asarray(worker_codes, dtype=np.int64), categories=list(workers)
            ),
            "utilization": np.asarray(utilization, dtype=float),
            "active": np.asarray(active, dtype=np.int64),
        }
    )
