"""An unmodified AutoGen worker, caller or publisher, for the labkit gateway interop tests.

Started as a subprocess by ``tests/test_live_interop.py``; it uses only AutoGen's public API
(``autogen_ext.runtimes.grpc.GrpcWorkerAgentRuntime``) and never imports labkit:
``labkit.live.pb`` and autogen_ext's generated protos register the same .proto file names
(``cloudevent.proto``, ``agent_worker.proto``) in protobuf's default pool, so they cannot share a
process.

Modes::

  serve   --host ADDR --name W --type echo [--type listener ...] [--sub TOPIC=AGENT_TYPE ...]
          [--prefix-sub PREFIX=AGENT_TYPE ...] [--delay-ms N]
  call    --host ADDR --name C --target TYPE (--keys a,b,c | --count N) [--repeat R]
          [--timeout S] [--wait-go]
  publish --host ADDR --name P --topic TYPE [--topic TYPE ...] --source S --count N
          [--noise-topic TYPE ...] [--wait-go]

Every output is one JSON object per line on stdout, flushed (AutoGen logs go to stderr)::

  {"event": "ready", "name": W, "client_id": ...}          connected and registered
  {"event": "received", "worker": W, "key": K, "caller": C, "seq": I}   an RPC reached a handler
  {"event": "delivered", "worker": W, "agent_type": ..., "agent_key": ..., "topic_type": ...,
   "topic_source": ..., "publisher": ..., "seq": ...}       a published event reached an agent
  {"event": "sending", "count": N}                          a caller starts its RPCs
  {"event": "result", "key": K, "seq": I, "ok": true, "worker": W, "echo_key": ...,
   "echo_type": ..., "echo_caller": ..., "echo_seq": ...}   an RPC reply
  {"event": "result", "key": K, "seq": I, "ok": false, "error": "...", "timed_out": false}
  {"event": "done", "ok": N, "failed": M}                   a caller's RPCs all ended
  {"event": "published", "count": N}                        a publisher handed its events over
  {"event": "fatal", "error": "..."}                        setup failed (exit status 1)

``serve`` runs until SIGTERM/SIGINT; ``publish`` stays connected until stdin closes or a signal
(AutoGen publishes are fire-and-forget: closing the channel early could drop queued events);
``call`` exits when its RPCs have ended. Every mode exits if its parent process goes away.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any

from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime

SETUP_TIMEOUT_S = 20.0


@dataclass
class Ping:
    caller: str
    seq: int
    key: str


@dataclass
class Pong:
    worker: str
    agent_type: str
    agent_key: str
    caller: str
    seq: int
    request_id: str


@dataclass
class News:
    publisher: str
    seq: int


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


class EchoAgent(RoutedAgent):
    """Replies to a Ping with who answered; records each published News it receives."""

    def __init__(self, worker: str, delay_s: float) -> None:
        super().__init__("labkit interop echo agent")
        self._worker = worker
        self._delay_s = delay_s

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Pong:
        emit(
            event="received",
            worker=self._worker,
            key=self.id.key,
            caller=message.caller,
            seq=message.seq,
        )
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        return Pong(
            worker=self._worker,
            agent_type=self.id.type,
            agent_key=self.id.key,
            caller=message.caller,
            seq=message.seq,
            request_id=ctx.message_id,
        )

    @message_handler
    async def on_news(self, message: News, ctx: MessageContext) -> None:
        topic = ctx.topic_id
        emit(
            event="delivered",
            worker=self._worker,
            agent_type=self.id.type,
            agent_key=self.id.key,
            topic_type=topic.type if topic else None,
            topic_source=topic.source if topic else None,
            publisher=message.publisher,
            seq=message.seq,
        )


def new_runtime(host: str) -> GrpcWorkerAgentRuntime:
    runtime = GrpcWorkerAgentRuntime(host_address=host)
    for cls in (Ping, Pong, News):
        runtime.add_message_serializer(try_get_known_serializers_for_type(cls))
    return runtime


def client_id(runtime: GrpcWorkerAgentRuntime) -> str | None:
    # The client-id AutoGen sends as gRPC metadata; private, read only to let tests name workers.
    connection = getattr(runtime, "_host_connection", None)
    return getattr(connection, "_client_id", None)


def split_pair(text: str) -> tuple[str, str]:
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected X=AGENT_TYPE, got {text!r}")
    return left, right


async def watch_parent() -> None:
    """Exit when the process that started us is gone (no orphans if pytest dies hard)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


async def wait_for_signal_or_eof(watch_stdin: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait())]
    if watch_stdin:
        waiters.append(asyncio.ensure_future(read_line()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()


async def read_line() -> str:
    """One line from stdin ("" at EOF), read on a daemon thread so exit never waits for it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()

    def reader() -> None:
        line = sys.stdin.readline()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(line))

    threading.Thread(target=reader, daemon=True).start()
    return await done


async def serve(args: argparse.Namespace) -> None:
    runtime = new_runtime(args.host)

    async def setup() -> None:
        await runtime.start()
        for agent_type in args.type:
            await EchoAgent.register(
                runtime, agent_type, lambda: EchoAgent(args.name, args.delay_ms / 1000.0)
            )
        for topic_type, agent_type in args.sub:
            await runtime.add_subscription(
                TypeSubscription(topic_type=topic_type, agent_type=agent_type)
            )
        for prefix, agent_type in args.prefix_sub:
            await runtime.add_subscription(
                TypePrefixSubscription(topic_type_prefix=prefix, agent_type=agent_type)
            )

    await asyncio.wait_for(setup(), SETUP_TIMEOUT_S)
    emit(event="ready", name=args.name, client_id=client_id(runtime), types=args.type)
    await wait_for_signal_or_eof(watch_stdin=False)
    # The gateway may be gone already; we are exiting anyway.
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(runtime.stop(), 3.0)


async def call(args: argparse.Namespace) -> None:
    runtime = new_runtime(args.host)
    await asyncio.wait_for(runtime.start(), SETUP_TIMEOUT_S)
    emit(event="ready", name=args.name, client_id=client_id(runtime))
    if args.wait_go:
        await read_line()

    keys = args.keys.split(",") if args.keys else [f"k{i}" for i in range(args.count)]
    jobs = [key for _ in range(args.repeat) for key in keys]

    async def one(seq: int, key: str) -> bool:
        try:
            reply = await asyncio.wait_for(
                runtime.send_message(
                    Ping(caller=args.name, seq=seq, key=key), AgentId(args.target, key)
                ),
                args.timeout,
            )
        except TimeoutError:
            emit(event="result", key=key, seq=seq, ok=False, error="timeout", timed_out=True)
            return False
        except Exception as exc:
            emit(event="result", key=key, seq=seq, ok=False, error=str(exc), timed_out=False)
            return False
        if not isinstance(reply, Pong):
            emit(
                event="result",
                key=key,
                seq=seq,
                ok=False,
                error=f"unexpected reply {reply!r}",
                timed_out=False,
            )
            return False
        emit(
            event="result",
            key=key,
            seq=seq,
            ok=True,
            worker=reply.worker,
            echo_type=reply.agent_type,
            echo_key=reply.agent_key,
            echo_caller=reply.caller,
            echo_seq=reply.seq,
        )
        return True

    emit(event="sending", count=len(jobs))
    outcomes = await asyncio.gather(*(one(seq, key) for seq, key in enumerate(jobs)))
    emit(event="done", ok=sum(outcomes), failed=len(outcomes) - sum(outcomes))
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(runtime.stop(), 3.0)


async def publish(args: argparse.Namespace) -> None:
    runtime = new_runtime(args.host)
    await asyncio.wait_for(runtime.start(), SETUP_TIMEOUT_S)
    emit(event="ready", name=args.name, client_id=client_id(runtime))
    if args.wait_go:
        await read_line()
    # Events nobody subscribed to go first: once the real ones have all arrived, these have
    # been routed too (one stream, in order), so a stray delivery would already show.
    for i, topic_type in enumerate(args.noise_topic):
        await runtime.publish_message(
            News(publisher=args.name, seq=-1 - i), TopicId(topic_type, args.source)
        )
    for seq in range(args.count):
        topic_type = args.topic[seq % len(args.topic)]
        await runtime.publish_message(
            News(publisher=args.name, seq=seq), TopicId(topic_type, args.source)
        )
    emit(event="published", count=args.count)
    await wait_for_signal_or_eof(watch_stdin=not args.wait_go)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)

    s = sub.add_parser("serve")
    s.add_argument("--type", action="append", required=True, help="agent type to register")
    s.add_argument("--sub", action="append", default=[], type=split_pair, metavar="TOPIC=TYPE")
    s.add_argument(
        "--prefix-sub", action="append", default=[], type=split_pair, metavar="PREFIX=TYPE"
    )
    s.add_argument("--delay-ms", type=float, default=0.0, help="sleep in the RPC handler")

    c = sub.add_parser("call")
    c.add_argument("--target", required=True, help="agent type to call")
    group = c.add_mutually_exclusive_group(required=True)
    group.add_argument("--keys", help="comma-separated agent keys")
    group.add_argument("--count", type=int, help="keys k0..k{N-1}")
    c.add_argument("--repeat", type=int, default=1, help="send every key this many times")
    c.add_argument("--timeout", type=float, default=15.0, help="per-RPC bound, seconds")
    c.add_argument("--wait-go", action="store_true", help="wait for a line on stdin first")

    b = sub.add_parser("publish")
    b.add_argument("--topic", action="append", required=True, help="topic type (round robin)")
    b.add_argument("--source", required=True, help="topic source")
    b.add_argument("--count", type=int, required=True)
    b.add_argument("--noise-topic", action="append", default=[], help="one event each, first")
    b.add_argument("--wait-go", action="store_true", help="wait for a line on stdin first")

    for each in (s, c, b):
        each.add_argument("--host", required=True, help="gateway address HOST:PORT")
        each.add_argument("--name", required=True, help="this process's name in the output")
    return p


async def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    watchdog = asyncio.ensure_future(watch_parent())
    try:
        await {"serve": serve, "call": call, "publish": publish}[args.mode](args)
    except BaseException as exc:
        emit(event="fatal", error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return 1
    finally:
        watchdog.cancel()
    return 0


if __name__ == "__main__":
    status = asyncio.run(main(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a thread may still sit in stdin.readline, and grpc's
    # threads can delay exit; everything worth keeping has been flushed.
    os._exit(status)
