"""Per-hop segments from the stamps a traced RPC carries back (``labkit.live.trace``)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from labkit.live.trace import (
    ADDED,
    ADDED_COLUMNS,
    ADDED_INDEX,
    SEGMENTS,
    STAMPS,
    WORKER_IN,
    segments_ms,
    stamp,
)


def test_segments_are_the_gaps_between_consecutive_times() -> None:
    md: dict[str, str] = {}
    for i, key in enumerate(STAMPS, start=1):
        stamp(md, key, 100.0 + i / 1000)  # one millisecond apart
    seg = segments_ms(100.0, md, 100.007)
    assert len(seg) == len(SEGMENTS) == 7
    assert all(math.isclose(v, 1.0, rel_tol=1e-6) for v in seg)


def test_a_missing_or_garbled_stamp_makes_its_two_segments_nan_not_an_error() -> None:
    md: dict[str, str] = {}
    for i, key in enumerate(STAMPS, start=1):
        stamp(md, key, float(i))
    md[WORKER_IN] = "not a number"
    seg = dict(zip(SEGMENTS, segments_ms(0.0, md, 7.0), strict=True))
    assert math.isnan(seg["to_worker"]) and math.isnan(seg["worker"])
    assert seg["gateway"] == 1000.0 and seg["from_worker"] == 1000.0
    assert all(math.isnan(v) for v in segments_ms(0.0, {}, 1.0))


def test_the_added_segments_are_all_but_the_workers_own_time() -> None:
    assert "worker" not in ADDED and len(ADDED) == len(SEGMENTS) - 1
    assert [SEGMENTS[i] for i in ADDED_INDEX] == list(ADDED)
    assert ADDED_COLUMNS == tuple(f"{s}_ms" for s in ADDED)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=8, max_size=8).map(sorted))
def test_stamps_round_trip_exactly_and_segments_sum_to_the_round_trip(times: list[float]) -> None:
    md: dict[str, str] = {}
    for key, t in zip(STAMPS, times[1:-1], strict=True):
        stamp(md, key, t)
        assert float(md[key]) == t  # repr keeps every bit
    seg = segments_ms(times[0], md, times[-1])
    assert all(v >= 0 for v in seg)
    assert math.isclose(sum(seg), (times[-1] - times[0]) * 1000, rel_tol=1e-9, abs_tol=1e-6)
