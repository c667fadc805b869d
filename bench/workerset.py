"""bench/workerset: a Sinal server of N worker processes (`sinal serve --workers N`) for the
connections and storm parts, and what each worker holds.

With `--workers N` the kernel spreads new connections over the workers (SO_REUSEPORT
hashes each connection's addresses and ports), so a start waits until every worker has
answered GET /health/ready with its own node id: a worker that starts listening late would
get fewer of the clients. The server's meter (bench.harness.ProcessMeter) sums CPU and RSS
over the parent and its workers. Each worker is its own process with its own open-files
limit, the hard RLIMIT_NOFILE it inherits (20,000 on the bench box): a worker cannot hold
more sockets than that, nor can one Node process (the peer).
"""

from __future__ import annotations

import contextlib
import resource
import time
import urllib.error
from typing import Any

import psutil

from bench.harness import ServerFailed, ServerProcess

FD_RESERVE = 100  # descriptors a server needs besides its clients' sockets (a rough guess)


def start_workers(server: ServerProcess, workers: int, timeout: float = 120.0) -> ServerProcess:
    """Start `server` (a `sinal_server`) with `--workers N` when N > 1; return once every
    worker answers /health/ready."""
    if workers <= 1:
        return server.start(timeout=timeout)
    server.argv = [*server.argv, "--workers", str(workers)]
    deadline = time.monotonic() + timeout
    server.start(timeout=timeout)
    seen: set[str] = set()
    while len(seen) < workers:  # each ask is a new connection: the kernel picks a worker
        with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
            seen.add(str(server.get_json("/health/ready").get("node", "")))
        # (an HTTPError, 503: that worker is still starting)
        if len(seen) < workers:
            time.sleep(0.05)
        if len(seen) < workers and time.monotonic() > deadline:
            server.stop()
            raise ServerFailed(f"{len(seen)} of {workers} workers ready after {timeout} s: "
                               f"{sorted(seen)}\n{server.log_tail()}")
    return server


def first_worker(server: ServerProcess, workers: int) -> int:
    """The pid py-spy records: the server, or the first of its workers (the parent of
    `--workers N` only supervises them)."""
    if workers <= 1:
        return server.pid
    with contextlib.suppress(psutil.Error):
        children = sorted(p.pid for p in psutil.Process(server.pid).children())
        if children:
            return int(children[0])
    return server.pid


def open_files_limit() -> int:
    """The hard open-files limit a server started from here inherits."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)


def capacity(processes: int) -> int:
    """About how many client sockets `processes` server processes can hold here."""
    return processes * max(0, open_files_limit() - FD_RESERVE)


def does_not_fit(connections: int, processes: int) -> str:
    """'' when `connections` fit in `processes` server processes' open-files limits, else
    why not (the connections past the limit fail: refused, reset or timed out)."""
    room = capacity(processes)
    if connections <= room:
        return ""
    return (f"{connections:,} connections do not fit: {processes} server process(es) with an "
            f"open-files limit of {open_files_limit():,} each hold about {room:,}")


def census(server: ServerProcess, token: str, workers: int, timeout: float = 30.0
           ) -> dict[str, Any]:
    """What each worker holds: connections by node as the node counts them (GET
    /api/supervisor, asked on new connections until every worker answered or `timeout`),
    and each worker process's RSS and open descriptors (psutil)."""
    nodes: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(nodes) < workers and time.monotonic() < deadline:
        try:
            tree = server.get_json("/api/supervisor", token)
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.1)
            continue
        hub = tree.get("realtime") or {}
        nodes[str(tree.get("node"))] = {"connections": hub.get("connections"),
                                        "refused": hub.get("refused"),
                                        "closedByCode": hub.get("closedByCode")}
    processes: list[dict[str, Any]] = []
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(server.pid)
        for proc in [parent, *parent.children()] if workers > 1 else [parent]:
            with contextlib.suppress(psutil.Error):
                processes.append({"pid": proc.pid, "worker": proc.pid != server.pid,
                                  "rssMb": round(proc.memory_info().rss / 2**20, 1),
                                  "openFiles": proc.num_fds()})
    return {"nodes": dict(sorted(nodes.items())), "processes": processes}


def census_line(found: dict[str, Any]) -> str:
    """`node: N connections` and `pid: RSS, fds` in one line, for the log."""
    nodes = ", ".join(f"{node}: {info['connections']}" for node, info in found["nodes"].items())
    several = len(found["processes"]) > 1
    procs = ", ".join(f"{p['pid']}{' (parent)' if several and not p['worker'] else ''}: "
                      f"{p['rssMb']} MB, {p['openFiles']} fds" for p in found["processes"])
    return f"connections by worker {{{nodes}}}; processes {{{procs}}}"
