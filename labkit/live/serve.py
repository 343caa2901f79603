"""``labkit gateway``: run the live gateway until SIGTERM/SIGINT.

Prints one line ``labkit gateway listening on HOST:PORT`` once bound (tests and ``labkit live``
read it to learn a port picked with ``--port 0``) and exits 0 after a graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from labkit.live.gateway import LiveConfig, LiveGateway, start


def live_config(
    scenario_path: Path | None, timeout_ms: float | None, api_keys: list[str]
) -> LiveConfig:
    """The gateway's config: the scenario's gateway and balancer sections when given (so the
    live gateway enforces what the simulator simulated), else defaults (consistent hashing,
    30 s deadline, one retry on a lost worker)."""
    config = LiveConfig()
    if scenario_path is not None:
        from labkit.scenario import load_scenario

        sc = load_scenario(scenario_path)
        config = LiveConfig(gateway=sc.gateway.core_config(), balancer=sc.balancer, seed=sc.seed)
    gw = config.gateway
    if timeout_ms is not None:
        gw = _replace(gw, timeout_s=timeout_ms / 1000)
    if api_keys:
        gw = _replace(gw, api_keys=frozenset(api_keys))
    config.gateway = gw
    return config


def _replace(obj, **changes):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(obj, **changes)


async def serve(config: LiveConfig, host: str, port: int, metrics_port: int | None = None) -> None:
    gateway = LiveGateway(config)
    running = await start(gateway, host, port, metrics_port=metrics_port)
    line = f"labkit gateway listening on {host}:{running.port}"
    if running.metrics_port is not None:
        line += f" (metrics on http://{host}:{running.metrics_port}/metrics)"
    print(line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(grace=1.0)


def main(
    scenario: Path | None,
    host: str,
    port: int,
    timeout_ms: float | None,
    api_keys: list[str],
    metrics_port: int | None,
    log_level: str,
) -> int:
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = live_config(scenario, timeout_ms, api_keys)
    asyncio.run(serve(config, host, port, metrics_port))
    return 0
