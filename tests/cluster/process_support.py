"""Sinal as the operator runs it, for the scale-out tests: `sinal serve` as a subprocess on
free loopback ports, and WebSocket clients that reconnect and resume from their last
offset, whatever process answers. Real time only where processes are involved; every
wait has a `trio.fail_after` guard."""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from sinal.domain.changes import read_changes, sequence_changes
from sinal.node.config import SETTINGS
from sinal.node.embedded import free_port
from sinal.protocol import (
    Broadcast,
    Connect,
    DataUpdate,
    Encoding,
    Error,
    Heartbeat,
    Resync,
    Subscribe,
    Subscribed,
    Welcome,
    decode_server,
    encode_client,
)
from tests.realtime.realtime_support import SECRET

TOPIC = "supplier_changed"
GUARD = 60.0


async def poll_until(condition: Callable[[], bool], guard: float = GUARD,
                     every: float = 0.02) -> None:
    """Wait (real time: other processes move the state) until `condition()` holds."""
    with trio.fail_after(guard):
        while True:
            if condition():
                return
            await trio.sleep(every)


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    env.update({"JWT_SECRET": SECRET, "LOG_LEVEL": "warning", "SINAL_ENV": "production",
                "SINAL_DRAIN_TIMEOUT": "200", **settings})
    return env


@dataclass
class Serving:
    """A running `sinal serve` and what its parent said on stderr."""

    process: trio.Process
    http_url: str
    ws_url: str
    lines: list[str] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def pids(self, node_id: str) -> list[int]:
        """Every pid the parent started `node_id` with, in order."""
        return [int(m.group(1)) for line in self.lines
                if (m := re.search(rf"worker {re.escape(node_id)} started \(pid (\d+)\)", line))]

    async def wait_line(self, pattern: str, count: int = 1) -> None:
        with trio.fail_after(GUARD):
            while sum(1 for line in self.lines if re.search(pattern, line)) < count:
                self.changed = trio.Event()
                await self.changed.wait()

    async def answering_nodes(self, want: set[str]) -> set[str]:
        """Ask /health/ready on new connections until every node of `want` answered ready."""
        seen: set[str] = set()

        def ask() -> str | None:
            try:
                response = httpx.get(self.http_url + "/health/ready", timeout=5,
                                     headers={"Connection": "close"})
            except httpx.HTTPError:
                return None
            node: str | None = response.json().get("node") if response.status_code == 200 \
                else None
            return node

        try:
            with trio.fail_after(GUARD):
                while not want <= seen:
                    node = await trio.to_thread.run_sync(ask)
                    if node is None:
                        await trio.sleep(0.05)
                    else:
                        seen.add(node)
        except trio.TooSlowError:
            raise AssertionError(f"only {seen} answered; the server said: {self.lines}") \
                from None
        return seen


@asynccontextmanager
async def sinal_serve(args: list[str], env: dict[str, str]) -> AsyncIterator[Serving]:
    http_port, ws_port = free_port(), free_port()
    env = {**env, "HTTP_PORT": str(http_port), "WEBSOCKET_PORT": str(ws_port)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sinal.node.cli", "serve", *args], env=env,
        stderr=-1, stdout=-1)
    serving = Serving(process, f"http://127.0.0.1:{http_port}", f"ws://127.0.0.1:{ws_port}/ws")

    async def read(stream: Any) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            serving.lines.extend(line.decode(errors="replace") for line in done)
            serving.changed.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, process.stderr)
            nursery.start_soon(read, process.stdout)
            try:
                yield serving
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


@dataclass
class ResumingClient:
    """Subscribes to TOPIC from `since`; on any drop, reconnects (jittered backoff) and
    resubscribes from the last offset it got. Every offset received is kept, in order."""

    url: str
    token: str
    since: int
    offsets: list[int] = field(default_factory=list)
    sessions: int = 0
    shutdowns: int = 0
    broadcasts: list[str] = field(default_factory=list)  # ids of `broadcast` frames

    @property
    def last(self) -> int:
        return self.offsets[-1] if self.offsets else self.since

    async def run(self, until: trio.Event) -> None:
        delay = 0.05
        while not until.is_set():
            try:
                await self._session(until)
                delay = 0.05
            except* (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
                pass
            if not until.is_set():
                await trio.sleep(delay * (0.5 + random.random()))
                delay = min(1.0, delay * 2)

    async def _session(self, until: trio.Event) -> None:
        encoding = Encoding.MSGPACK
        async with open_websocket_url(self.url, subprotocols=[encoding.subprotocol],
                                      message_queue_size=100000) as ws:
            async def send(message: Any) -> None:
                await ws.send_message(encode_client(message, encoding))

            await send(Connect(token=self.token))
            self.sessions += 1
            await send(Subscribe(events=(TOPIC,), filters={}, since={TOPIC: self.last},
                                 ref="s"))
            async with trio.open_nursery() as nursery:
                async def stop_when_done() -> None:
                    await until.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_when_done)
                while True:
                    message = decode_server(await ws.get_message(), encoding)
                    if isinstance(message, DataUpdate) and message.topic == TOPIC:
                        assert message.offset > self.last, (message.offset, self.last)
                        self.offsets.append(message.offset)
                    elif isinstance(message, Resync):
                        await send(Subscribe(events=(TOPIC,), filters={},
                                             since={TOPIC: self.last}, ref="r"))
                    elif isinstance(message, Error):
                        if message.code == "server_shutdown":
                            self.shutdowns += 1
                    elif isinstance(message, Broadcast):
                        self.broadcasts.append(message.id)
                    elif not isinstance(message, Welcome | Subscribed | Heartbeat):
                        pass


def log_head(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return sequence_changes(conn)


def positions_after(db_url: str, start: int) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        sequence_changes(conn)
        return [c.position for c in read_changes(conn, start, 1_000_000, [TOPIC])]


@dataclass
class Writers:
    """Concurrent SQL writers inserting suppliers; `written` counts the rows committed."""

    db_url: str
    threads: int = 3
    rows: int = 100
    written: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _write(self, tag: int) -> None:
        """Insert `rows` rows; a database that goes away (a restart) is waited for and the
        row tried again (real time: PostgreSQL is another process)."""
        i, conn = 0, None
        try:
            while i < self.rows:
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.db_url, autocommit=True, connect_timeout=5)
                    conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (f"w{tag}-{i}",))
                except psycopg.OperationalError:
                    conn = None
                    time.sleep(0.1)
                    continue
                i += 1
                with self.lock:
                    self.written += 1
        finally:
            if conn is not None:
                conn.close()

    def run_all(self) -> None:
        threads = [threading.Thread(target=self._write, args=(t,)) for t in range(self.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def wait_written(self, count: int) -> None:
        await poll_until(lambda: self.written >= count)


async def check_every_client(clients: list[ResumingClient], db_url: str, start: int,
                             done: trio.Event) -> list[int]:
    """Wait until every client reached the log's head, then check: nothing missing,
    nothing twice, in order."""
    expected = await trio.to_thread.run_sync(positions_after, db_url, start)
    assert expected, "the writers wrote nothing"
    await poll_until(lambda: all(c.last >= expected[-1] for c in clients))
    done.set()
    for c in clients:
        assert c.offsets == expected, (len(c.offsets), len(expected))
    return expected


@asynccontextmanager
async def clients_under_writes(db_url: str, ws_url: str, token: str, *, rows: int,
                               first: int, clients: int = 6, threads: int = 3
                               ) -> AsyncIterator[tuple[list[ResumingClient], Writers]]:
    """`clients` resuming clients subscribed from the log's head, then `threads` writers of
    `rows` rows each; yields once `first` rows are written (do the fault there). On the
    way out: every row written, and `check_every_client`."""
    start = await trio.to_thread.run_sync(log_head, db_url)
    resuming = [ResumingClient(ws_url, token, start) for _ in range(clients)]
    writers = Writers(db_url, threads=threads, rows=rows)
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for c in resuming:
            nursery.start_soon(c.run, done)
        await poll_until(lambda: all(c.sessions for c in resuming))
        nursery.start_soon(trio.to_thread.run_sync, writers.run_all)
        await writers.wait_written(first)
        yield resuming, writers
        await writers.wait_written(threads * rows)
        await check_every_client(resuming, db_url, start, done)
