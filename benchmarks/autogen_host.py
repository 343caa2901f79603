"""AutoGen's own gRPC host, as shipped, for ``bench_gateway.py`` to compare labkit's gateway with.

    python benchmarks/autogen_host.py --port PORT

Runs ``autogen_ext.runtimes.grpc.GrpcWorkerAgentRuntimeHost`` on ``127.0.0.1:PORT``, prints
``autogen host listening on 127.0.0.1:PORT`` once it serves, and stops gracefully on SIGTERM or
SIGINT (exit 0). ``GrpcWorkerAgentRuntimeHost`` does not report the port it bound, so the caller
picks a free one; if the port is taken after all the script exits with status 2 (the caller
retries on another). It exits too if the process that started it goes away.
"""

import argparse
import asyncio
import os
import signal
import socket
import sys

from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHost

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


async def wait_serving(port: int) -> None:
    """Until the port accepts a TCP connection (the host starts its server in a task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


async def watch_parent(parent: int) -> None:
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


async def main(port: int) -> int:
    # probe first: grpc's add_insecure_port on a taken port may not fail in every version
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            print(f"autogen host: port {port} is taken", file=sys.stderr, flush=True)
            return 2
    try:
        host = GrpcWorkerAgentRuntimeHost(address=f"{HOST}:{port}")
    except RuntimeError as exc:  # "Failed to bind"
        print(f"autogen host: {exc}", file=sys.stderr, flush=True)
        return 2
    host.start()
    await wait_serving(port)
    print(f"autogen host listening on {HOST}:{port}", flush=True)
    watchdog = asyncio.ensure_future(watch_parent(os.getppid()))
    try:
        await host.stop_when_signal(grace=1, signals=(signal.SIGTERM, signal.SIGINT))
    finally:
        watchdog.cancel()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    status = asyncio.run(main(parser.parse_args().port))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # skip interpreter teardown: grpc's threads can delay exit
