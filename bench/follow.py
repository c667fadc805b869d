"""bench/follow: what following the change log costs PostgreSQL, per node (issue #11).

    .venv/bin/python -m bench.follow [--listeners 1,2,4,8] [--rates 0,200,1000] [--seconds 4]

Every Sinal process (a node, or a worker of `--workers N`) runs one `DatabaseListener`:
LISTEN on `sinal_changes` and `sinal_positions`, and on every wake-up one round trip that
runs the sequencer and reads the log after its position (`sinal_sequence_changes()` then
`sinal_changes_after()`), plus a `SELECT 1` on a quiet poll tick (1 s). This bench runs K
processes that each run only that: `python -m bench.follow listener` is a node's
`DatabaseListener` with the node's `Topic` actors (no subscribers) and no other consumer,
on a pool of one connection, as a node's wiring builds it (sinal/node/wiring.py); it
counts its reads and pings. The writer (bench/writer.py, one autocommit INSERT into
`suppliers` per commit) runs at R commits/s for `seconds`; then, over the same window:

* sequencer rows/s: the head position's advance (change_log_head) / window;
* per listener: reads/s and pings/s (round trips; a read is one implicit transaction of
  two statements), changes per read, the share of reads that found nothing new;
* in the JSON only, xact_commit/s of the database (pg_stat_database): not a count of
  round trips. It has every session's transactions, the writer's too, and more: a
  listening backend that is idle when a notification arrives reads the notification
  queue in a transaction of its own (PostgreSQL's async.c), so every commit also costs
  each listener's backend such a transaction; and a backend flushes its counters at most
  once a second (up to 10 s later when idle), so a window of a few seconds is skewed;
* CPU of the PostgreSQL backends: the listeners' (found by application_name
  `sinal-bench-follow-<i>`, set through PGAPPNAME) summed, and per listener; the
  writer's backend apart; the listener processes' own CPU (the node's side of the cost).

From the runs at the highest rate, a least-squares line of the listeners' backend CPU
against K gives PostgreSQL's CPU per listener, and so an estimate of how many
listeners (nodes or workers) one PostgreSQL core can feed at that rate. Nothing is
pinned; the K listeners, the writer and PostgreSQL share the machine's cores.
Results: bench/results/follow-<utc>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.harness import (
    BenchDatabase,
    OthersMeter,
    start_report,
    write_report,
)
from bench.writer import WritePlan, Writer

RESULTS = Path(__file__).parent / "results"
APP_PREFIX = "sinal-bench-follow-"
WARMUP, TAIL = 0.5, 0.5  # seconds the writer runs before and after the window


# --------------------------------------------------------------------------- the listener


def listener_main(url: str) -> None:  # pragma: no cover - runs in its own process
    """One node's change-log follower and nothing else; answers `stats` lines on stdin."""
    import trio

    from sinal.actors.listener import DatabaseListener
    from sinal.actors.topic import Topic
    from sinal.domain.catalogue import LOG_TOPICS
    from sinal.domain.db import Database
    from sinal.engine.registry import Registry

    class CountingListener(DatabaseListener):
        reads = 0
        empty_reads = 0
        pings = 0

        async def _read_here(self, conn: Any, after: int) -> Any:
            head, changes, fresh = await super()._read_here(conn, after)
            self.reads += 1
            if not changes:
                self.empty_reads += 1
            return head, changes, fresh

        def _ping(self, conn: Any) -> None:  # type: ignore[override]
            self.pings += 1
            conn.execute("SELECT 1")

    async def run() -> None:
        registry = Registry()
        db = Database(url, min_size=1, max_size=1)
        await trio.to_thread.run_sync(db.open)
        topics = [Topic(name, registry=registry) for name in LOG_TOPICS]
        listener = CountingListener(db, LOG_TOPICS, registry=registry)
        try:
            async with trio.open_nursery() as nursery:
                for topic in topics:
                    await nursery.start(topic.run)
                await nursery.start(listener.run)
                print(json.dumps({"type": "ready", "position": listener.position}), flush=True)
                while True:
                    line = await trio.to_thread.run_sync(sys.stdin.readline,
                                                         abandon_on_cancel=True)
                    if not line or line.strip() == "exit":
                        nursery.cancel_scope.cancel()
                        break
                    print(json.dumps({
                        "type": "stats", "reads": listener.reads,
                        "emptyReads": listener.empty_reads, "pings": listener.pings,
                        "wakeups": listener.wakeups, "echoes": listener.echoes,
                        "changesRead": listener.changes_read, "position": listener.position,
                        "runs": listener.runs}), flush=True)
        finally:
            await trio.to_thread.run_sync(db.close)

    trio.run(run)


class ListenerProcess:
    """`python -m bench.follow listener` as a child, talked to in lines."""

    def __init__(self, index: int, url: str) -> None:
        env = {**os.environ, "PGAPPNAME": f"{APP_PREFIX}{index}", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.follow", "listener",
                                      "--url", url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env,
                                     cwd=Path(__file__).resolve().parent.parent)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ps = psutil.Process(self.proc.pid)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))
        self.lines.put(None)

    def expect(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if message is None:
                raise RuntimeError(f"listener exited with {self.proc.wait(5)} before {kind}")
            if message.get("type") == kind:
                return message

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        return self.expect("stats")

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"exit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------- measuring


def backends(db: BenchDatabase, application_name: str) -> list[psutil.Process]:
    rows = db.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name LIKE %s", (application_name,))
    out = []
    for (pid,) in rows:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(int(pid)))
    return out


def cpu_of(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def snapshot(db: BenchDatabase, listeners: list[ListenerProcess],
             pg_listeners: list[psutil.Process], pg_writer: list[psutil.Process]
             ) -> dict[str, Any]:
    t = time.perf_counter()
    stats = [lp.stats() for lp in listeners]  # before the head: no position passes it
    head = db.execute("SELECT position FROM change_log_head")[0][0]
    xact = db.execute("SELECT xact_commit FROM pg_stat_database "
                      "WHERE datname = current_database()")[0][0]
    return {"t": t, "head": int(head), "xact": int(xact), "stats": stats,
            "listenerCpu": [lp.cpu() for lp in listeners],
            "pgListenerCpu": cpu_of(pg_listeners), "pgWriterCpu": cpu_of(pg_writer)}


def window(a: dict[str, Any], b: dict[str, Any], k: int) -> dict[str, Any]:
    wall = b["t"] - a["t"]

    def per_listener(key: str) -> float:
        pairs = zip(a["stats"], b["stats"], strict=True)
        return float(sum(sb[key] - sa[key] for sa, sb in pairs)) / k

    reads, pings = per_listener("reads"), per_listener("pings")
    changes, empty = per_listener("changesRead"), per_listener("emptyReads")
    listener_cpu = sum(y - x for x, y in zip(a["listenerCpu"], b["listenerCpu"], strict=True))
    pg_cpu = b["pgListenerCpu"] - a["pgListenerCpu"]
    return {
        "seconds": round(wall, 3),
        "sequencerRowsPerSecond": round((b["head"] - a["head"]) / wall, 1),
        "readsPerSecondPerListener": round(reads / wall, 1),
        "pingsPerSecondPerListener": round(pings / wall, 2),
        "queriesPerSecondPerListener": round((reads + pings) / wall, 1),
        "changesPerRead": round(changes / reads, 2) if reads else None,
        "emptyReadShare": round(empty / reads, 3) if reads else None,
        "wakeupsPerSecondPerListener": round(per_listener("wakeups") / wall, 1),
        "echoesPerSecondPerListener": round(per_listener("echoes") / wall, 1),
        "xactCommitPerSecond": round((b["xact"] - a["xact"]) / wall, 1),
        "pgListenersCpuPercent": round(100 * pg_cpu / wall, 1),
        "pgCpuPercentPerListener": round(100 * pg_cpu / wall / k, 2),
        "pgUsPerRead": round(1e6 * pg_cpu / (reads * k), 1) if reads else None,
        "pgWriterCpuPercent": round(100 * (b["pgWriterCpu"] - a["pgWriterCpu"]) / wall, 1),
        "listenerProcessCpuPercentEach": round(100 * listener_cpu / wall / k, 2),
        "maxLagAtEnd": max(b["head"] - s["position"] for s in b["stats"]),
    }


def measure_k(db: BenchDatabase, k: int, rates: list[float], seconds: float, log: Any
              ) -> list[dict[str, Any]]:
    listeners = [ListenerProcess(i, db.url) for i in range(k)]
    rows: list[dict[str, Any]] = []
    try:
        for lp in listeners:
            lp.expect("ready", 60)
        pg_listeners = backends(db, APP_PREFIX + "%")
        for rate in rates:
            # the writer runs from before the window to after it: the window is steady
            # state, and the writer's backend is still there to be measured at its end
            commits = max(1, int(rate * (WARMUP + seconds + TAIL)))
            writer = Writer(WritePlan(db.url, rate, commits)) if rate else None
            try:
                pg_writer = backends(db, "sinal-bench-writer")
                if writer is not None:
                    writer.start()
                    time.sleep(WARMUP)
                others = OthersMeter()
                others.mark()
                before = snapshot(db, listeners, pg_listeners, pg_writer)
                time.sleep(seconds)
                after = snapshot(db, listeners, pg_listeners, pg_writer)
                other_cpu = others.percent()
                written = writer.result() if writer is not None else {"rate": 0.0,
                                                                      "commits": 0}
            finally:
                if writer is not None:
                    writer.close()
            row = {"listeners": k, "rate": rate, "commitRate": written["rate"],
                   "commits": written["commits"], "pgListenerBackends": len(pg_listeners),
                   "writerCpuPercent": written.get("cpuPercent", 0.0),
                   **window(before, after, k)}
            row["otherCpuPercent"] = other_cpu
            rows.append(row)
            log(f"  K={k} R={rate:g}: writer {row['commitRate']}/s, sequencer "
                f"{row['sequencerRowsPerSecond']} rows/s; per listener "
                f"{row['queriesPerSecondPerListener']} queries/s "
                f"({row['changesPerRead']} changes/read, "
                f"{row['emptyReadShare']} empty), PG CPU {row['pgCpuPercentPerListener']}% "
                f"({row['pgUsPerRead']} us/read), listener process "
                f"{row['listenerProcessCpuPercentEach']}%; all listeners' backends "
                f"{row['pgListenersCpuPercent']}%, writer's {row['pgWriterCpuPercent']}%; "
                f"others {row['otherCpuPercent']}%")
    finally:
        for lp in listeners:
            lp.close()
    return rows


def fit(rows: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    """Least squares of the listeners' backend CPU % on K at `rate`; the K at one core."""
    points = [(r["listeners"], r["pgListenersCpuPercent"]) for r in rows if r["rate"] == rate]
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(k for k, _ in points) / n
    my = sum(c for _, c in points) / n
    sxx = sum((k - mx) ** 2 for k, _ in points)
    if not sxx:
        return None
    slope = sum((k - mx) * (c - my) for k, c in points) / sxx
    intercept = my - slope * mx
    return {"rate": rate, "cpuPercentPerListener": round(slope, 2),
            "interceptPercent": round(intercept, 2),
            "listenersPerPostgresCore": int((100 - intercept) / slope) if slope > 0 else None,
            "points": points}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# Sinal change-log follow bench, {results['startedAt']}", "",
             f"Machine: {m['cpus']} CPUs ({m['cpuModel']}), {m['memoryMb']:,} MB; load "
             f"average {m['loadAverage']} at the start; other processes used "
             f"{results['backgroundCpuPercent']}% CPU just before; {m['postgres']}. "
             f"Command: `{results['command']}`. Total {results['seconds']:.0f} s. Nothing "
             "pinned: the K listener processes, the writer and PostgreSQL share the cores.",
             "",
             "| K | commits/s asked | achieved | sequencer rows/s | reads/s per listener | "
             "pings/s | wake-ups/s | changes/read | empty reads | PG CPU % all listeners | "
             "PG CPU % per listener | PG us/read | writer's backend CPU % | listener "
             "process CPU % each | others' CPU % |", "|" + "---|" * 15]
    for r in results["runs"]:
        lines.append(
            f"| {r['listeners']} | {r['rate']:g} | {r['commitRate']} | "
            f"{r['sequencerRowsPerSecond']} | {r['readsPerSecondPerListener']} | "
            f"{r['pingsPerSecondPerListener']} | {r['wakeupsPerSecondPerListener']} | "
            f"{r['changesPerRead']} | {r['emptyReadShare']} | "
            f"{r['pgListenersCpuPercent']} | {r['pgCpuPercentPerListener']} | "
            f"{r['pgUsPerRead']} | {r['pgWriterCpuPercent']} | "
            f"{r['listenerProcessCpuPercentEach']} | {r['otherCpuPercent']} |")
    lines.append("")
    for f in results.get("fits", []):
        if f is None:
            continue
        lines.append(f"At {f['rate']:g} commits/s, the listeners' PostgreSQL CPU grows by "
                     f"{f['cpuPercentPerListener']}% of a core per listener (intercept "
                     f"{f['interceptPercent']}%): one PostgreSQL core reaches 100% at about "
                     f"{f['listenersPerPostgresCore']} listeners (a linear extrapolation "
                     "from the K measured here; an estimate, not a measurement).")
    lines += ["", "A listener is one Sinal process (a node, or a worker of `--workers N`). "
              "A read is one round trip: the sequencer and the log read after the "
              "listener's position, one implicit transaction; a ping is the `SELECT 1` of a "
              "quiet poll tick. CPU % is of one core. Others' CPU: processes outside this "
              "bench (PostgreSQL's excluded) over the window: another user's load.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.follow",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "listener"))
    parser.add_argument("--url", default="", help="(listener mode) the database")
    parser.add_argument("--listeners", default="1,2,4,8", help="K values, comma-separated")
    parser.add_argument("--rates", default="0,200,1000",
                        help="writer commits/s, comma-separated (0: no writer, idle)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per rate")
    args = parser.parse_args(argv)
    if args.mode == "listener":
        listener_main(args.url)
        return 0
    ks = [int(k) for k in args.listeners.split(",") if k]
    rates = [float(r) for r in args.rates.split(",") if r]
    t0 = time.monotonic()
    log, results = start_report("bench.follow", argv)
    stamp = results["stamp"]
    results["runs"] = []
    log(f"{results['machine']['cpus']} CPUs, load {results['machine']['loadAverage']}, other "
        f"processes {results['backgroundCpuPercent']}% CPU; K {ks}, rates {rates}")
    with BenchDatabase() as db:
        for k in ks:
            results["runs"] += measure_k(db, k, rates, args.seconds, log)
    results["fits"] = [fit(results["runs"], rate) for rate in rates if rate]
    results["seconds"] = round(time.monotonic() - t0, 1)
    write_report(RESULTS, f"follow-{stamp}", results, markdown(results), log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
