"""The topology graph and picture: nodes and edges for gateways, workers and the cache ring,
coloured by the registry's verdict at a chosen moment."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from typing import Any

from labkit.plots_topology import HEALTH_COLORS, topology, topology_graph
from labkit.scenario import scenario_from_dict
from labkit.sim import simulate


def run(**extra: Any) -> Any:
    data: dict[str, Any] = {
        "name": "topo",
        "seed": 2,
        "duration_s": 12,
        "warmup_s": 1,
        "workers": {"count": 6, "service_time": {"dist": "exponential", "mean_ms": 5}},
        "workload": {"arrival": {"process": "poisson", "rate_rps": 300}},
        "gateway": {"count": 2, "timeout_ms": 1000},
        "registry": {"heartbeat_interval_ms": 200, "failure_timeout_ms": 600},
    }
    data.update(extra)
    return simulate(scenario_from_dict(data))


def test_graph_has_every_piece_and_the_registrys_verdicts() -> None:
    res = run(
        faults=[{"kind": "crash", "at_s": 4, "workers": ["w-1"], "restart_after_s": 4}],
        cache={"nodes": 3, "node_failures": [{"node": "c-2", "at_s": 3, "duration_s": 2}]},
    )
    g = topology_graph(res, at_s=6)
    kinds = {
        k: sorted(n for n, d in g.nodes(data=True) if d["kind"] == k)
        for k in ("gateway", "worker", "cache")
    }
    assert kinds["gateway"] == ["gw-0", "gw-1"]
    assert kinds["worker"] == [f"w-{i}" for i in range(6)]
    assert kinds["cache"] == ["c-0", "c-1", "c-2"]
    # every gateway routes to every worker and talks to every cache node; the ring is closed
    assert all(g.has_edge(gw, w) for gw in kinds["gateway"] for w in kinds["worker"])
    ring = [(a, b) for a, b, d in g.edges(data=True) if d["kind"] == "ring"]
    assert len(ring) == 3
    # at 6 s the crashed worker is down in the registry; by the end it is back
    assert g.nodes["w-1"]["state"] == "down"
    assert g.nodes["w-0"]["state"] == "healthy"
    assert topology_graph(res).nodes["w-1"]["state"] == "healthy"
    # the cache node failed 3–5 s: up again at 6 s, down at 4 s
    assert g.nodes["c-2"]["state"] == "healthy"
    assert topology_graph(res, at_s=4).nodes["c-2"]["state"] == "down"


def test_picture_colours_workers_by_health() -> None:
    res = run(faults=[{"kind": "crash", "at_s": 4, "workers": ["w-1"], "restart_after_s": 4}])
    fig = topology(res, at_s=6)
    ax = fig.axes[0]
    colours = set()
    for coll in ax.collections:
        for rgba in coll.get_facecolors():
            colours.add(matplotlib.colors.to_hex(rgba))
    assert HEALTH_COLORS["down"] in colours and HEALTH_COLORS["healthy"] in colours
    assert "t = 6 s" in ax.get_title()


def test_picture_without_health_or_cache_still_draws() -> None:
    res = run()
    fig = topology(res)
    assert "end of run" in fig.axes[0].get_title()
