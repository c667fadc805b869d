"""`sinal serve --workers N`: N worker processes on the same two ports.

One Sinal process runs on one core. With `--workers N` (or SINAL_WORKERS; `auto` is the
number of cores) the parent process prepares the database once (embedded server,
migrations, demo data), then starts N workers, each a full node -- its own supervisor
tree, its own listener reading the change log, its own topics -- with
SINAL_REUSE_PORT=true: every worker binds HTTP_PORT and WEBSOCKET_PORT with SO_REUSEPORT
and the kernel spreads new connections among them. Workers share nothing but the
database (the only source of changes and their order) and Redis (cluster state).

The parent reserves both ports before the workers start (a bound, never listening
SO_REUSEPORT socket per port: with HTTP_PORT=0 it picks a free one), so every worker
binds the same port, and holds them while it runs.

The parent supervises its workers like a one_for_one supervisor: a worker that exits is
started again after a backoff (0.5 s doubling to 10 s, back to 0.5 s once a worker has
run for a period); more than `intensity` restarts of one worker within `period` seconds
stop the whole group (exit code 1): something is wrong that restarting will not fix.

SIGTERM or SIGINT to the parent is passed on to every worker, which drains
(node/wiring.py, Node.drain: readiness 503 first, then every socket gets
`server_shutdown`, 4501); a worker still running after SINAL_DRAIN_TIMEOUT plus a grace
period is killed. (A parent killed with -9 leaves its workers serving: stop them as a
group, e.g. systemd's control group or `kill -- -<pgid>`.)

Each worker is a node of its own in the Redis registry
(`<SINAL_NODE_ID or host-pid>-w<i>`), which `sinal status` and GET /api/supervisor show.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

log = logging.getLogger("sinal.workers")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
GRACE = 10.0  # seconds after the drain timeout before a worker is killed


class WorkersFailed(RuntimeError):
    """A worker restarted more than the intensity allows."""


def worker_count(setting: int) -> int:
    """SINAL_WORKERS / --workers: 0 means `auto`, one per core."""
    return setting if setting > 0 else (os.cpu_count() or 1)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT that never listens: it takes no
    connection but holds the port (and tells which one when `port` is 0)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Worker:
    index: int
    node_id: str
    process: trio.Process | None = None
    starts: int = 0
    exits: deque[float] = field(default_factory=deque)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class WorkerGroup:
    """The parent: starts, watches and stops the workers."""

    command: Sequence[str]
    env: dict[str, str]
    workers: list[Worker]
    intensity: int = 5
    period: float = 60.0
    grace: float = GRACE
    on_event: Callable[[str], None] = lambda line: None
    stopping: bool = False

    async def _run_worker(self, worker: Worker) -> None:
        delay = BACKOFF_BASE
        while not self.stopping:
            env = {**self.env, "SINAL_NODE_ID": worker.node_id}
            started = trio.current_time()
            process = await trio.lowlevel.open_process(
                list(self.command), env=env)
            worker.process = process
            worker.starts += 1
            self.on_event(f"worker {worker.node_id} started (pid {process.pid})")
            code = await process.wait()
            if self.stopping:
                return
            now = trio.current_time()
            self.on_event(f"worker {worker.node_id} exited with code {code}")
            worker.exits.append(now)
            while worker.exits and worker.exits[0] < now - self.period:
                worker.exits.popleft()
            if len(worker.exits) > self.intensity:
                raise WorkersFailed(
                    f"worker {worker.node_id} exited {len(worker.exits)} times in "
                    f"{self.period:.0f} s (last code {code}); giving up")
            if now - started > self.period:
                delay = BACKOFF_BASE
            await trio.sleep(delay)
            delay = min(BACKOFF_CAP, delay * 2)

    async def stop(self, patience: float) -> None:
        """SIGTERM to every worker (each drains), SIGKILL to those still up after
        `patience` seconds."""
        self.stopping = True
        running = [w.process for w in self.workers
                   if w.process is not None and w.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(patience):
            for process in running:
                await process.wait()
        for process in running:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def run(self, drain_seconds: float) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_signals, nursery.cancel_scope, drain_seconds)
                for worker in self.workers:
                    nursery.start_soon(self._run_worker, worker)
        finally:
            with trio.CancelScope(shield=True):
                await self.stop(drain_seconds + self.grace)

    async def _forward_signals(self, scope: trio.CancelScope, drain_seconds: float) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.on_event(f"signal {signal.Signals(signum).name}: draining the workers")
                await self.stop(drain_seconds + self.grace)
                scope.cancel()
                return


def worker_command(env_file: str | None, verbose: bool) -> list[str]:
    command = [sys.executable, "-m", "sinal.node.cli"]
    if env_file:
        command += ["--env-file", env_file]
    command += ["serve", "--workers", "1"]
    if verbose:
        command.append("--verbose")
    return command


def run_workers(count: int, *, base_node_id: str, env: dict[str, str], command: Sequence[str],
                drain_seconds: float, on_event: Callable[[str], None]) -> None:
    """Run `count` workers until a signal (then drain them) or until one fails too often
    (WorkersFailed)."""
    group = WorkerGroup(command, env, [Worker(i, f"{base_node_id}-w{i}") for i in range(count)],
                        on_event=on_event)
    trio.run(group.run, drain_seconds)
