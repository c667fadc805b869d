"""Micro benchmark: WebSocket fan-out of one small frame to many sockets.

Not a test. One server process (this one, pinned to CPU 0 where possible) holds
N connections; a client process (pinned to CPU 1) opens them with raw sockets,
drains them with epoll and counts bytes. The server broadcasts M frames of
``--size`` payload bytes. Modes, in the same run:

* ``offer``: Sinal's transport (actors.transport): each broadcast framed once
  with ``build_frame`` and handed to every connection with ``offer()``
  (non-blocking write straight to the socket, writer task only for leftovers);
* ``offer-paced``: the same at a fixed delivery rate, for latency;
* ``trio-websocket``: the baseline, trio-websocket's server with one sender
  task per connection fed by a channel, calling ``send_message`` per client.

Reported per mode: deliveries/s (N*M / time from the first broadcast until the
last byte reached the client), latency of sampled deliveries (the payload
carries the send time; CLOCK_MONOTONIC is shared between processes), server and
client CPU seconds (the client must not be the bottleneck), refused offers,
server memory per connection. Talks only to 127.0.0.1 and stops by itself.

    .venv/bin/python bench/ws_fanout_micro.py [--clients 1000] [--messages 1000]
"""

from __future__ import annotations

import argparse
import base64
import math
import multiprocessing as mp
import os
import resource
import select
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sinal.websocket import (  # noqa: E402
    ConnectionClosed,
    ConnectionLimits,
    WebSocketConnection,
    listener_port,
    serve_websockets,
)
from sinal.websocket.frames import build_frame, frame_header_size  # noqa: E402

SAMPLE_EVERY = 50  # every 50th connection parses frames for latency
TIMESTAMP = struct.Struct("!d")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin_to_cpu(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- client process


def client_process(
    port: int,
    clients: int,
    frame_size: int,
    header_size: int,
    frames: int,
    batch_delay: float,
    pipe: Pipe,
) -> None:
    """Open ``clients`` WebSockets, drain them, report when every byte arrived.

    ``batch_delay`` > 0 pauses that long between epoll rounds so that each read
    takes many frames: the client then costs less CPU than the server (checked
    in the report), at the price of that much added latency.
    """
    raise_fd_limit()
    pin_to_cpu(1)
    expected = frame_size * frames
    socks: list[socket.socket] = []
    received: dict[int, int] = {}
    sampled: dict[int, bytearray] = {}
    for i in range(clients):
        sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("server closed during handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"handshake refused: {head[:80]!r}")
        rest = head.split(b"\r\n\r\n", 1)[1]
        sock.setblocking(False)
        socks.append(sock)
        received[sock.fileno()] = len(rest)
        if i % SAMPLE_EVERY == 0:
            sampled[sock.fileno()] = bytearray(rest)
    by_fd = {s.fileno(): s for s in socks}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    pipe.send("ready")

    buf = bytearray(1 << 18)
    view = memoryview(buf)
    latencies: list[float] = []
    remaining = clients
    cpu0 = time.process_time()
    last = first = 0.0
    deadline = time.monotonic() + 90
    while remaining and time.monotonic() < deadline:
        if batch_delay:
            time.sleep(batch_delay)  # let bytes pile up: fewer, larger reads
        for fd, _ in poller.poll(1.0):
            n = by_fd[fd].recv_into(buf)
            if not first:
                first = time.perf_counter()
            if n == 0:
                poller.unregister(fd)
                remaining -= 1
                continue
            total = received[fd] + n
            received[fd] = total
            pending = sampled.get(fd)
            if pending is not None:
                now = time.perf_counter()
                pending += view[:n]
                whole = len(pending) - len(pending) % frame_size
                for off in range(0, whole, frame_size):
                    (sent_at,) = TIMESTAMP.unpack_from(pending, off + header_size)
                    latencies.append(now - sent_at)
                del pending[:whole]
            if total >= expected:
                poller.unregister(fd)
                remaining -= 1
                last = time.perf_counter()
    cpu = time.process_time() - cpu0
    pipe.send(
        {
            "complete": remaining == 0,
            "first": first,
            "last": last,
            "cpu": cpu,
            "latencies": latencies,
            "bytes": sum(received.values()),
        }
    )
    pipe.recv()  # "exit"
    for sock in socks:
        sock.close()


# --------------------------------------------------------------------------- server side


@dataclass
class Result:
    mode: str
    clients: int
    messages: int
    seconds: float
    server_cpu: float
    client_cpu: float
    latencies: list[float]
    refused: int
    complete: bool
    rss_per_connection: float
    deferred: int | None = None  # frames the kernel refused at first (offer modes)

    @property
    def rate(self) -> float:
        return self.clients * self.messages / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        lat = sorted(self.latencies)

        def pct(p: float) -> str:
            if not lat:
                return "   n/a"
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))] * 1000:6.1f}"

        return (
            f"{self.mode:15s} {self.clients:5d} x {self.messages:5d}  "
            f"{self.rate:10,.0f} deliveries/s  {self.seconds:6.2f} s  "
            f"lat p50/p99/max ms {pct(0.5)}/{pct(0.99)}/{pct(1.0)}  "
            f"server cpu {self.server_cpu:5.2f} s  client cpu {self.client_cpu:5.2f} s  "
            f"refused {self.refused}  rss/conn {self.rss_per_connection / 1024:5.1f} KiB"
            + (
                ""
                if self.deferred is None
                else f"  via writer {100 * self.deferred / (self.clients * self.messages):.1f}%"
            )
            + ("" if self.complete else "  INCOMPLETE")
        )


def payload_now(size: int) -> bytes:
    return TIMESTAMP.pack(time.perf_counter()) + b"x" * (size - TIMESTAMP.size)


Broadcast = Callable[[bytes], int]  # returns how many offers were refused
Serve = Callable[[Callable[[int], None]], Awaitable[Broadcast]]


async def drive(
    mode: str,
    serve: Serve,
    all_connected: trio.Event,
    args: argparse.Namespace,
    messages: int,
    rate: float | None,
) -> Result:
    """Start the server via ``serve``, the client process, broadcast, collect."""
    frame_size = frame_header_size(args.size) + args.size
    ctx = mp.get_context("spawn")
    parent_pipe, child_pipe = ctx.Pipe()
    rss0 = rss_bytes()
    proc_box: list[mp.process.BaseProcess] = []

    def start_clients(port: int) -> None:
        proc = ctx.Process(
            target=client_process,
            args=(
                port,
                args.clients,
                frame_size,
                frame_size - args.size,
                messages,
                0.0 if rate else args.client_batch_delay,
                child_pipe,
            ),
            daemon=True,
        )
        proc.start()
        proc_box.append(proc)

    broadcast = await serve(start_clients)
    with trio.fail_after(60):
        assert await trio.to_thread.run_sync(parent_pipe.recv) == "ready"
        await all_connected.wait()
    rss_per_conn = (rss_bytes() - rss0) / args.clients

    refused = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    interval = args.clients / rate if rate else 0.0
    for k in range(messages):
        refused += broadcast(build_frame(payload_now(args.size)))
        delay = t0 + (k + 1) * interval - time.perf_counter() if interval else 0.0
        if delay > 0:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
    with trio.fail_after(90):
        report = await trio.to_thread.run_sync(parent_pipe.recv)
    server_cpu = time.process_time() - cpu0
    parent_pipe.send("exit")
    await trio.to_thread.run_sync(proc_box[0].join, 10)
    return Result(
        mode=mode,
        clients=args.clients,
        messages=messages,
        seconds=(report["last"] or time.perf_counter()) - t0,
        server_cpu=server_cpu,
        client_cpu=report["cpu"],
        latencies=report["latencies"],
        refused=refused,
        complete=report["complete"],
        rss_per_connection=rss_per_conn,
    )


async def run_offer(args: argparse.Namespace, messages: int, rate: float | None) -> Result:
    connections: list[WebSocketConnection] = []
    limits = ConnectionLimits(outbox_limit=args.outbox, close_timeout=1)
    all_connected = trio.Event()

    async def handler(ws: WebSocketConnection) -> None:
        connections.append(ws)
        if len(connections) == args.clients:
            all_connected.set()
        try:
            while True:
                await ws.receive()
        except ConnectionClosed:
            pass

    def broadcast(frame: bytes) -> int:
        refused = 0
        for ws in connections:
            if not ws.offer(frame):
                refused += 1
        return refused

    async with trio.open_nursery() as nursery:

        async def serve(start_clients: Callable[[int], None]) -> Broadcast:
            listeners = await nursery.start(
                partial(serve_websockets, handler, limits=limits, backlog=4096)
            )
            start_clients(listener_port(listeners))
            return broadcast

        mode = "offer" if rate is None else f"offer@{rate / 1000:.0f}k/s"
        result = await drive(mode, serve, all_connected, args, messages, rate)
        result.deferred = sum(ws.deferred_frames for ws in connections)
        nursery.cancel_scope.cancel()
    return result


async def run_trio_websocket(args: argparse.Namespace, messages: int) -> Result:
    import trio_websocket

    channels: list[trio.MemorySendChannel[bytes]] = []
    all_connected = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        send, receive = trio.open_memory_channel[bytes](math.inf)
        channels.append(send)
        if len(channels) == args.clients:
            all_connected.set()
        try:
            async for message in receive:
                await ws.send_message(message)
        except trio_websocket.ConnectionClosed:
            pass

    def broadcast(frame: bytes) -> int:
        payload = frame[frame_header_size(args.size) :]  # send_message frames it again
        for channel in channels:
            channel.send_nowait(payload)
        return 0

    async with trio.open_nursery() as nursery:

        async def serve(start_clients: Callable[[int], None]) -> Broadcast:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
            )
            start_clients(server.port)
            return broadcast

        result = await drive("trio-websocket", serve, all_connected, args, messages, None)
        nursery.cancel_scope.cancel()
    return result


async def main(args: argparse.Namespace) -> None:
    results = [await run_offer(args, args.messages, None)]
    print(results[-1].line(), flush=True)
    if args.paced_rate:
        results.append(await run_offer(args, args.paced_messages, args.paced_rate))
        print(results[-1].line(), flush=True)
    if args.baseline_messages:
        results.append(await run_trio_websocket(args, args.baseline_messages))
        print(results[-1].line(), flush=True)
        print(f"offer / trio-websocket: {results[0].rate / results[-1].rate:.1f}x", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000, help="broadcasts, offer mode")
    parser.add_argument("--baseline-messages", type=int, default=300)
    parser.add_argument("--paced-rate", type=float, default=50_000, help="deliveries/s; 0: skip")
    parser.add_argument("--paced-messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="payload bytes per frame")
    parser.add_argument("--outbox", type=int, default=1 << 20, help="outbox bound per connection")
    parser.add_argument(
        "--client-batch-delay", type=float, default=0.001,
        help="client pause between epoll rounds in unpaced modes (s)",
    )
    arguments = parser.parse_args()
    raise_fd_limit()
    pin_to_cpu(0)
    print(
        f"fan-out to {arguments.clients} WebSockets on 127.0.0.1, {arguments.size}-byte payloads, "
        f"server pinned to CPU 0, client process to CPU 1 ({os.cpu_count()} CPUs)",
        flush=True,
    )
    trio.run(main, arguments)
