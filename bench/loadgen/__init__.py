"""The compiled load client: `loadgen`, a C program (main.c, conn.c, send.c, codec.c,
wire.c; libc and POSIX only) that `build()` compiles with `cc -O2` into
bench/loadgen/build/ whenever a source is newer than the binary.

`CompiledClients` drives K loadgen processes the way `bench.loadclient.LoadClients`
drives its Python processes, with the same methods and the same merged counters, so
the fan-out and connections parts switch with one call (`open_clients`). Each process
gets its share of the connections on the command line, the tokens in a file (mode
0600, removed at close: `plan.token` for every connection, or `plan.tokens`, one per
connection), and takes control lines on stdin:

* it writes ``{"type": "ready", ...}`` once every connection it was asked for has been
  tried (ready, or failed with a reason);
* ``stats [brief] [reset] [phase=C]`` is answered with ``{"type": "stats", ...}``: the
  counters since the last reset (latency and connect-time histograms unless brief), and
  its own CPU time from getrusage (user + system);
* ``exit``, or the end of stdin, aborts every socket (RST) and ends the process.

Connection i (numbered over all processes of one `CompiledClients`, from `index_base`)
binds to source address 127.0.0.<2 + i % K> before connecting, K = ceil(planned total /
90 % of the kernel's ephemeral port range): each address has its own ~28k ports, so the
bench can pass 64,000 connections. One process holds at most its open-files limit in
sockets (the hard RLIMIT_NOFILE, which an unprivileged process cannot raise), so a large
N is split over as many processes as that needs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from bench.loadclient import ClientPlan, LoadClients, histogram_percentiles

LOADGEN_DIR = Path(__file__).resolve().parent
SOURCES = ("main.c", "conn.c", "send.c", "codec.c", "wire.c", "loadgen.h", "wire.h")
BUILD_DIR = LOADGEN_DIR / "build"
BINARY = BUILD_DIR / "loadgen"
CFLAGS = ("-O2", "-std=c11", "-Wall", "-Wextra")
FD_RESERVE = 256  # descriptors a process keeps for itself (stdio, epoll, slack)
SOURCE_BASE = 2  # loadgen's --source-base: the first source address is 127.0.0.2

_build_lock = threading.Lock()


class BuildFailed(RuntimeError):
    pass


def build(force: bool = False) -> Path:
    """The binary, compiled first when it is missing or older than a source."""
    with _build_lock:
        sources = [LOADGEN_DIR / name for name in SOURCES]
        newest = max(path.stat().st_mtime for path in sources)
        if not force and BINARY.exists() and BINARY.stat().st_mtime >= newest:
            return BINARY
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise BuildFailed("no C compiler: the load client needs `cc` on PATH")
        BUILD_DIR.mkdir(exist_ok=True)
        partial = BUILD_DIR / f"loadgen.{os.getpid()}.partial"
        done = subprocess.run(
            [cc, *CFLAGS, "-o", str(partial), *(str(p) for p in sources if p.suffix == ".c")],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BuildFailed(f"{cc} failed:\n{done.stderr[-4000:]}")
        os.replace(partial, BINARY)  # atomic: a concurrent build never runs half a file
        return BINARY


def connections_per_process() -> int:
    """Sockets one process may hold: its hard open-files limit, less a reserve."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else int(hard)
    return max(1, limit - FD_RESERVE)


def default_processes(connections: int, cpus: frozenset[int]) -> int:
    """One process per load CPU, more when the open-files limit asks for it."""
    return max(len(cpus) or 1, math.ceil(connections / connections_per_process()))


def token_lines(plan: ClientPlan, index_base: int = 0) -> list[str]:
    """The token file's lines: loadgen gives connection i (numbered from `index_base`)
    line i mod len, so `plan.tokens` is rotated to give the plan's j-th connection
    `plan.tokens[j]`, as the Python client does; one line of `plan.token` without them."""
    if not plan.tokens:
        return [plan.token]
    shift = -index_base % len(plan.tokens)
    return [*plan.tokens[shift:], *plan.tokens[:shift]]


def connect_percentiles(hist: Counter[int], max_ms: float) -> dict[str, float | None]:
    """Connect-to-subscribed p50/p95/p99/max in ms and the count, from a histogram."""
    result: dict[str, float | None] = dict(histogram_percentiles(hist, max_ms / 1000))
    result["count"] = sum(hist.values())
    return result


class CompiledClients:
    """K loadgen processes holding `plan.connections` sockets between them."""

    def __init__(self, plan: ClientPlan, processes: int = 0, *, encoding: str = "msgpack",
                 index_base: int = 0, planned_total: int = 0,
                 ports: tuple[int, ...] = (), per_address: int = 0) -> None:
        if plan.connect_rate or plan.lifetime:
            raise ValueError("the compiled client opens connections as fast as the handshake "
                             "window allows and holds them: no connect_rate, no lifetime")
        self.plan = plan
        binary = build()
        n = plan.connections
        processes = max(processes or default_processes(n, plan.cpus),
                        math.ceil(n / connections_per_process()))
        processes = max(1, min(processes, n))
        self._dir = tempfile.mkdtemp(prefix="sinal-loadgen-")
        tokens = Path(self._dir) / "tokens"
        fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(t + "\n" for t in token_lines(plan, index_base)))
        total = max(planned_total, index_base + n)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lines: list[queue.Queue[dict[str, Any] | None]] = []
        self._ready: list[dict[str, Any] | None] = [None] * processes
        self.connect_report: dict[str, Any] = {}
        share, extra = divmod(n, processes)
        first = index_base
        try:
            for i in range(processes):
                count = share + (1 if i < extra else 0)
                argv = [str(binary), "--protocol", plan.protocol, "--encoding", encoding,
                        "--port", ",".join(str(p) for p in (ports or (plan.port,))),
                        "--connections", str(count), "--first-index", str(first),
                        "--total", str(total), "--token-file", str(tokens),
                        "--topics", ",".join(plan.topics),
                        "--heartbeat", str(plan.heartbeat_interval),
                        "--window", str(plan.handshake_window),
                        "--handshake-timeout", str(plan.handshake_timeout),
                        "--phase", plan.phase]
                if per_address:
                    argv += ["--per-address", str(per_address)]
                if plan.cpus:
                    argv += ["--cpus", ",".join(str(c) for c in sorted(plan.cpus))]
                first += count
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
                assert proc.stdout is not None
                threading.Thread(target=_read_lines, args=(proc.stdout, lines),
                                 daemon=True).start()
                self.procs.append(proc)
                self._lines.append(lines)
        except BaseException:
            self.close()
            raise

    # --- the line protocol -------------------------------------------------------------

    def _send(self, index: int, line: str) -> None:
        stdin = self.procs[index].stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        stdin.flush()

    def _receive(self, index: int, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._lines[index].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"loadgen {index} did not send {kind}") from None
            if message is None:
                code = self.procs[index].wait(5)
                raise RuntimeError(f"loadgen {index} exited with {code} before {kind}")
            if message["type"] == "ready":
                self._ready[index] = message
            if message["type"] == kind:
                return message

    # --- what LoadClients offers -------------------------------------------------------

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        ready, seconds, cpu, max_ms = 0, 0.0, 0.0, 0.0
        failed: Counter[str] = Counter()
        hist: Counter[int] = Counter()
        addresses = retries = highest = 0
        deadline = time.monotonic() + timeout  # for all processes together
        for i in range(len(self.procs)):
            report = self._ready[i] or self._receive(
                i, "ready", max(0.0, deadline - time.monotonic()))
            ready += report["ready"]
            seconds = max(seconds, report["seconds"])
            cpu += report["cpuSeconds"]
            max_ms = max(max_ms, report["connectMaxMs"])
            failed.update(report["failed"])
            hist.update({int(k): v for k, v in report["connectHist"].items()})
            addresses = max(addresses, report["sourceAddresses"])
            retries += report["addressRetries"]
            if report["sourceAddresses"]:  # 127.0.0.0 + base + K x (shift + 1) - 1
                highest = max(highest, SOURCE_BASE - 1
                              + report["sourceAddresses"] * (report["sourceShift"] + 1))
        self.connect_report = {"ready": ready, "failed": dict(failed), "seconds": seconds,
                               "connectMs": connect_percentiles(hist, max_ms),
                               "clientCpuSeconds": round(cpu, 3),
                               "sourceAddresses": addresses,
                               "highestSourceAddress": _address(highest) if highest else None,
                               "addressRetries": retries}
        return self.connect_report

    @property
    def all_tried(self) -> bool:
        """Every process has reported ready (seen by an earlier call)."""
        return all(report is not None for report in self._ready)

    def stats(self, reset: bool = False, phase: str = "", brief: bool = False) -> dict[str, Any]:
        """Merged counters; `reset` starts a new window, `phase` (one character) makes
        only frames of that writer phase count from now on."""
        command = "stats" + (" brief" if brief else "") + (" reset" if reset else "") \
            + (f" phase={phase}" if phase else "")
        for i in range(len(self.procs)):
            self._send(i, command)
        sums = ("ready", "peakReady", "opened", "completed", "frames", "staleFrames", "bytes",
                "controlFrames", "resyncs", "cpuSeconds", "userSeconds", "systemSeconds",
                "heartbeats", "dataUpdates", "offsetRegressions", "badFrames", "recvCalls",
                "wakeups", "addressRetries")
        merged: dict[str, Any] = dict.fromkeys(sums, 0)
        merged.update({"wallSeconds": 0.0, "maxLatency": 0.0, "firstAt": 0.0, "lastAt": 0.0})
        hist: Counter[int] = Counter()
        connect_hist: Counter[int] = Counter()
        closes: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        connect_max = 0.0
        for i in range(len(self.procs)):
            s = self._receive(i, "stats", 30)
            for key in sums:
                merged[key] += s[key]
            merged["wallSeconds"] = max(merged["wallSeconds"], s["wallSeconds"])
            merged["maxLatency"] = max(merged["maxLatency"], s["maxLatency"])
            if s["firstAt"]:
                merged["firstAt"] = min(merged["firstAt"] or s["firstAt"], s["firstAt"])
            merged["lastAt"] = max(merged["lastAt"], s["lastAt"])
            hist.update({int(k): v for k, v in s.get("hist", {}).items()})
            connect_hist.update({int(k): v for k, v in s.get("connectHist", {}).items()})
            connect_max = max(connect_max, s["connectMaxMs"])
            closes.update(s["closes"])
            failed.update(s["failed"])
        merged["hist"] = hist
        merged["closes"] = dict(closes)
        merged["failed"] = dict(failed)
        merged["latencyMs"] = histogram_percentiles(hist, merged["maxLatency"])
        merged["connectMs"] = connect_percentiles(connect_hist, connect_max)
        return merged

    def frames(self) -> int:
        return int(self.stats(brief=True)["frames"])

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write(b"exit\n")
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> CompiledClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _address(offset: int) -> str:
    """127.0.0.0 + offset, dotted."""
    return f"127.{offset >> 16 & 255}.{offset >> 8 & 255}.{offset & 255}"


def _read_lines(stream: IO[bytes], lines: queue.Queue[dict[str, Any] | None]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for raw in stream:
            with contextlib.suppress(json.JSONDecodeError):
                lines.put(json.loads(raw))
    lines.put(None)


Clients = LoadClients | CompiledClients


def open_clients(plan: ClientPlan, *, python: bool = False, processes: int = 0,
                 python_per_process: int = 2500, encoding: str = "msgpack",
                 index_base: int = 0, planned_total: int = 0) -> Clients:
    """The compiled client, or the Python one (`python`: for comparison, msgpack only)."""
    if python:
        if encoding != "msgpack":
            raise ValueError("the Python load client speaks MessagePack only")
        return LoadClients(plan, processes or math.ceil(plan.connections / python_per_process))
    return CompiledClients(plan, processes, encoding=encoding, index_base=index_base,
                           planned_total=planned_total)
