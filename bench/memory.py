"""bench/memory: where the bytes of one idle connection go, and whether a closed one is
released.

One node runs under `tracemalloc` (bench/memprobe.py). The part takes a snapshot with no
client, opens N idle subscribed connections with heartbeats (the connections part's load
client), holds them a few seconds, takes a second snapshot, closes every client, waits
until the node has let them all go, and takes a third. Reported per connection:

- traced bytes (second - first) / N, by allocation site (file:line) and by file;
- live GC-tracked objects by type (count and `sys.getsizeof` bytes) / N: what the bytes
  are (socket objects, wsproto state, trio tasks and frames, dicts);
- traced bytes left after every connection closed (third - first): should be ~0.

RSS is not measured here (tracing costs memory of its own): the connections part measures
it on a plain `sinal serve`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BENCH_TOPIC, REPO, BenchDatabase, CpuPlan, ServerProcess, sinal_server
from bench.loadclient import ClientPlan, LoadClients

CLIENTS_PER_PROCESS = 2500
ACTOR_TYPE = "sinal.actors.connection.ConnectionActor"


@dataclass
class MemoryOptions:
    connections: int = 5000
    heartbeat_ms: int = 5000
    hold_seconds: float = 3.0
    frames: int = 1  # tracemalloc frames per allocation
    top: int = 20
    pin: bool = True


def probe_server(db: BenchDatabase, wd: Path, cpus: CpuPlan, options: MemoryOptions,
                 directory: Path) -> ServerProcess:
    server = sinal_server(db, wd, cpus=cpus.server, settings={
        "WEBSOCKET_HEARTBEAT_INTERVAL": str(options.heartbeat_ms),
        "WEBSOCKET_CONNECTION_TIMEOUT": str(3 * options.heartbeat_ms),
        "MAX_CONCURRENT_CONNECTIONS": str(options.connections + 1000),
        "WEBSOCKET_PRELOGIN_PER_ADDRESS": str(options.connections + 1000),
        "WEBSOCKET_LOGIN_TIMEOUT": "60000",
        "SINAL_MEMPROBE_DIR": str(directory),
        "SINAL_MEMPROBE_FRAMES": str(options.frames),
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO))
                                      if p),
    })
    server.name = "sinal-memprobe"
    server.argv = [sys.executable, "-m", "bench.memprobe"]
    return server.start()


def take(server: ServerProcess, directory: Path, k: int, timeout: float = 120.0
         ) -> tuple[tracemalloc.Snapshot, dict[str, list[int]]]:
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while not (directory / f"done-{k}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"memprobe did not write snapshot {k}")
        time.sleep(0.2)
    with (directory / f"snapshot-{k}.pickle").open("rb") as handle:
        snapshot = pickle.load(handle)
    census = json.loads((directory / f"census-{k}.json").read_text())
    return snapshot, census


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                                   tracemalloc.Filter(False, pickle.__file__)])


def per_connection(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int,
                   group: str, top: int) -> list[dict[str, Any]]:
    rows = []
    for stat in _filtered(after).compare_to(_filtered(before), group)[:top]:
        frame = stat.traceback[0]
        where = frame.filename if group == "filename" else f"{frame.filename}:{frame.lineno}"
        rows.append({"where": short_path(where),
                     "bytesPerConnection": round(stat.size_diff / n, 1),
                     "blocksPerConnection": round(stat.count_diff / n, 2)})
    return rows


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1].lstrip("/").removeprefix("11/").removeprefix(
                "12/")
    return path.replace(str(REPO) + "/", "")


def types_per_connection(before: dict[str, list[int]], after: dict[str, list[int]], n: int,
                         top: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, (count, size) in after.items():
        count0, size0 = before.get(name, [0, 0])
        if count - count0 > 0:
            rows.append({"type": name, "countPerConnection": round((count - count0) / n, 2),
                         "bytesPerConnection": round((size - size0) / n, 1)})
    rows.sort(key=lambda r: -r["bytesPerConnection"])
    return rows[:top]


def traced_total(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in _filtered(snapshot).statistics("filename"))


def run_memory(db: BenchDatabase, wd: Path, options: MemoryOptions, log: Any) -> dict[str, Any]:
    cpus = CpuPlan.for_machine(options.pin)
    directory = wd / "memprobe"
    directory.mkdir(exist_ok=True)
    server = probe_server(db, wd, cpus, options, directory)
    n = options.connections
    result: dict[str, Any] = {"options": options.__dict__.copy(), "connections": n}
    try:
        time.sleep(1.0)
        empty, census0 = take(server, directory, 0)
        log("  memory: snapshot without clients taken")
        plan = ClientPlan("sinal", server.ws_port, n, db.token(), (BENCH_TOPIC,),
                          heartbeat_interval=options.heartbeat_ms / 1000, cpus=cpus.load,
                          handshake_timeout=300.0)  # a traced node is slow to accept
        with LoadClients(plan, math.ceil(n / CLIENTS_PER_PROCESS)) as clients:
            ready = clients.wait_ready(timeout=600)["ready"]
            log(f"  memory: {ready} connections ready")
            time.sleep(options.hold_seconds)
            held, census1 = take(server, directory, 1)
            log("  memory: snapshot with the connections taken")
        result["held"] = ready
        # per live connection actor (handshakes still in flight hold one too)
        actors = census1.get(ACTOR_TYPE, [0])[0] - census0.get(ACTOR_TYPE, [0])[0]
        result["liveActors"] = actors
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                realtime = server.get_json("/api/supervisor", db.token())["realtime"]
            except OSError:
                continue  # a busy node: ask again
            if realtime["connections"] == 0 and realtime["pending"] == 0:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        closed, census2 = take(server, directory, 2)
        ready = max(1, actors, ready if not actors else 0)
        base = traced_total(empty)
        result.update({
            "tracedBytesPerConnection": round((traced_total(held) - base) / ready, 1),
            "tracedBytesLeftAfterClose": traced_total(closed) - base,
            "tracedBytesLeftPerClosedConnection": round((traced_total(closed) - base) / ready,
                                                        1),
            "bySite": per_connection(empty, held, ready, "lineno", options.top),
            "byFile": per_connection(empty, held, ready, "filename", options.top),
            "byType": types_per_connection(census0, census1, ready, options.top),
            "leftByType": types_per_connection(census0, census2, ready, 8),
        })
        log(f"  memory: {ready} idle connections, {result['tracedBytesPerConnection']:,} "
            f"traced bytes each; {result['tracedBytesLeftAfterClose']:,} bytes left after "
            "they all closed")
        for row in result["byFile"][:8]:
            log(f"    {row['bytesPerConnection']:8.1f} B  {row['where']}")
    finally:
        server.stop()
    return result
