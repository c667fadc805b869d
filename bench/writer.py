"""The writer: commits changes into PostgreSQL from its own process, at a fixed rate or
as fast as it can, each change one autocommit INSERT (`INSERT INTO suppliers` unless the
plan names another statement).

Each row carries its send time in `name` as ``@t=<time.time(), 6 decimals><phase>``; the load
client reads it back from the frame, so latency = client receive time - the writer's
time just before the INSERT (which includes the commit itself). The session sets
`synchronous_commit = off` (this session only): the bench measures fan-out, not the
disk's fsync rate.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

import psycopg

from bench.harness import pin_self

INSERT = "INSERT INTO suppliers (name, email) VALUES (%s, %s)"


@dataclass(frozen=True, slots=True)
class WritePlan:
    url: str
    rate: float  # commits per second; 0: as fast as possible
    commits: int
    cpus: frozenset[int] = frozenset()
    phase: str = "0"  # one character after the time: lets clients tell phases apart
    sql: str = INSERT  # its first parameter is the marker, `args` are the others
    args: tuple[object, ...] = ("bench@sinal.dev",)


def marker(phase: str) -> str:
    return f"bench @t={time.time():.6f}{phase}"


def writer_main(plan: WritePlan, pipe: Pipe) -> None:
    pin_self(plan.cpus)
    with psycopg.connect(plan.url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET application_name = 'sinal-bench-writer'")
        pipe.send("ready")
        if pipe.recv() != "go":
            return
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        first = time.time()
        interval = 1.0 / plan.rate if plan.rate else 0.0
        errors = 0
        late = 0
        for k in range(plan.commits):
            if interval:
                delay = t0 + k * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.05:
                    late += 1
            try:
                conn.execute(plan.sql, (marker(plan.phase), *plan.args), prepare=True)
            except psycopg.Error:
                errors += 1
        seconds = time.perf_counter() - t0
        pipe.send({"commits": plan.commits - errors, "errors": errors,
                   "seconds": round(seconds, 3), "firstAt": first, "lastAt": time.time(),
                   "rate": round((plan.commits - errors) / seconds, 1) if seconds else 0.0,
                   "lateWrites": late,
                   "cpuPercent": round(100 * (time.process_time() - cpu0) / seconds, 1)
                   if seconds else 0.0})


class Writer:
    """A writer process, started and connected before `run` so that start-up is not timed."""

    def __init__(self, plan: WritePlan) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=writer_main, args=(plan, child), daemon=True)
        self.proc.start()
        if not self.pipe.poll(60) or self.pipe.recv() != "ready":
            self.close()
            raise RuntimeError("writer did not start")

    def start(self) -> None:
        self.pipe.send("go")

    def result(self, timeout: float = 300.0) -> dict[str, Any]:
        if not self.pipe.poll(timeout):
            raise TimeoutError("writer did not finish")
        result: dict[str, Any] = self.pipe.recv()
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.pipe.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
