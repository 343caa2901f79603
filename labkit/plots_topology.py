"""The topology picture: gateways, workers and the cache ring as a graph, coloured by health.

A glance at the service layer's shape and state at one moment: which workers the registry
believes healthy (green), suspects (amber) or has marked down (red), at time ``at_s`` of a run
(default: its last health sample, or every worker healthy when the run recorded none), with
node size following each worker's utilisation. Cache nodes sit on their own ring; ones that had
failed by ``at_s`` are grey. Built with networkx so a user can take the graph further.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

HEALTH_COLORS = {"healthy": "#2e7d32", "suspect": "#f9a825", "down": "#c62828"}
GATEWAY_COLOR = "#1565c0"
CACHE_COLOR = "#6a1b9a"
DOWN_CACHE_COLOR = "#9e9e9e"
#: beyond this many workers the picture shows a sample (with a note), not a hairball
MAX_WORKERS = 60


def topology_graph(results: Any, at_s: float | None = None) -> nx.Graph:
    """Nodes ``gw-i``, ``w-i``, ``c-i`` with attributes ``kind`` and ``state`` (and
    ``utilization`` for workers); edges gateway–worker, gateway–cache node, and the cache ring."""
    sc = results.scenario
    g = nx.Graph()
    gateways = [f"gw-{i}" for i in range(sc.gateway.count)]
    for name in gateways:
        g.add_node(name, kind="gateway", state="healthy")
    states = _registry_states(results, at_s)
    util = dict(zip(results.workers["worker"], results.workers["utilization"], strict=False))
    for name in results.workers["worker"]:
        g.add_node(
            name,
            kind="worker",
            state=states.get(name, "healthy"),
            utilization=float(util.get(name, 0.0)),
        )
        for gw in gateways:
            g.add_edge(gw, name, kind="route")
    if sc.cache is not None:
        nodes = [f"c-{i}" for i in range(sc.cache.config.nodes)]
        down = _failed_cache_nodes(results, at_s)
        for name in nodes:
            g.add_node(name, kind="cache", state="down" if name in down else "healthy")
            for gw in gateways:
                g.add_edge(gw, name, kind="cache")
        for a, b in zip(nodes, nodes[1:] + nodes[:1], strict=True):
            if a != b:
                g.add_edge(a, b, kind="ring")
    return g


def _registry_states(results: Any, at_s: float | None) -> dict[str, str]:
    health = getattr(results, "health", None)
    if health is None or health.empty:
        return {}
    times = health["t_s"].unique()
    t = (
        times.max()
        if at_s is None
        else times[times <= at_s].max()
        if (times <= at_s).any()
        else times.min()
    )
    snap = health[health["t_s"] == t]
    return {str(w): str(s) for w, s in zip(snap["worker"], snap["registry"], strict=True)}


def _failed_cache_nodes(results: Any, at_s: float | None) -> set[str]:
    cache = (results.summary or {}).get("cache") or {}
    t = math.inf if at_s is None else at_s
    down: set[str] = set()
    for ev in sorted(cache.get("events", []), key=lambda e: e["t_s"]):
        if ev["t_s"] > t:
            break
        if ev["event"] == "crash":
            down.add(ev["node"])
        elif ev["event"] == "restart":
            down.discard(ev["node"])
    return down


def topology(results: Any, at_s: float | None = None, ax: Axes | None = None) -> Figure:
    """Draw ``topology_graph``: gateways in the middle, workers around them, cache ring aside."""
    g = topology_graph(results, at_s)
    from labkit.plots import _figure

    # outside pyplot like every labkit plot: no global state, shown once in a notebook
    fig, ax = _figure(ax, (8, 7))
    workers = [n for n, d in g.nodes(data=True) if d["kind"] == "worker"]
    shown = workers[:MAX_WORKERS]
    hidden = len(workers) - len(shown)
    sub = g.subgraph([n for n in g if g.nodes[n]["kind"] != "worker" or n in set(shown)])
    pos: dict[str, tuple[float, float]] = {}
    gateways = [n for n in sub if sub.nodes[n]["kind"] == "gateway"]
    for i, name in enumerate(gateways):
        pos[name] = (0.15 * (i - (len(gateways) - 1) / 2), 0.0)
    for i, name in enumerate(shown):
        angle = 2 * math.pi * i / max(1, len(shown))
        pos[name] = (math.cos(angle), math.sin(angle))
    caches = [n for n in sub if sub.nodes[n]["kind"] == "cache"]
    for i, name in enumerate(caches):
        angle = 2 * math.pi * i / max(1, len(caches))
        pos[name] = (2.7 + 0.45 * math.cos(angle), 0.45 * math.sin(angle))
    route_edges = [(a, b) for a, b, d in sub.edges(data=True) if d["kind"] == "route"]
    other_edges = [(a, b) for a, b, d in sub.edges(data=True) if d["kind"] != "route"]
    nx.draw_networkx_edges(sub, pos, edgelist=route_edges, ax=ax, alpha=0.15, width=0.6)
    nx.draw_networkx_edges(
        sub, pos, edgelist=other_edges, ax=ax, alpha=0.5, width=1.0, edge_color=CACHE_COLOR
    )
    nx.draw_networkx_nodes(
        sub, pos, nodelist=gateways, node_color=GATEWAY_COLOR, node_shape="s", node_size=500, ax=ax
    )
    colors = [HEALTH_COLORS.get(sub.nodes[n]["state"], "#757575") for n in shown]
    sizes = [80 + 320 * min(1.0, sub.nodes[n]["utilization"]) for n in shown]
    nx.draw_networkx_nodes(sub, pos, nodelist=shown, node_color=colors, node_size=sizes, ax=ax)
    if caches:
        cache_colors = [
            DOWN_CACHE_COLOR if sub.nodes[n]["state"] == "down" else CACHE_COLOR for n in caches
        ]
        nx.draw_networkx_nodes(
            sub,
            pos,
            nodelist=caches,
            node_color=cache_colors,
            node_shape="h",
            node_size=300,
            ax=ax,
        )
    labels = {n: n for n in gateways + caches}
    if len(shown) <= 24:
        labels.update({n: n for n in shown})
    nx.draw_networkx_labels(sub, pos, labels=labels, font_size=7, ax=ax)
    when = "end of run" if at_s is None else f"t = {at_s:g} s"
    note = f" (first {len(shown)} of {len(workers)} workers)" if hidden else ""
    ax.set_title(f"{results.scenario.name}: topology at {when}{note}")
    handles = [
        Line2D([], [], marker="s", ls="", color=GATEWAY_COLOR, label="gateway"),
        *[
            Line2D([], [], marker="o", ls="", color=c, label=f"worker: {s}")
            for s, c in HEALTH_COLORS.items()
        ],
    ]
    if caches:
        handles.append(Line2D([], [], marker="h", ls="", color=CACHE_COLOR, label="cache node"))
        handles.append(
            Line2D([], [], marker="h", ls="", color=DOWN_CACHE_COLOR, label="cache node (down)")
        )
    ax.legend(handles=handles, loc="lower left", fontsize=7, frameon=False)
    ax.text(
        0.99,
        0.01,
        "worker size: utilisation",
        transform=ax.transAxes,
        ha="right",
        fontsize=7,
        color="#616161",
    )
    ax.set_axis_off()
    return fig
