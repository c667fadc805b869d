"""bench/fanout: N WebSocket clients subscribed to one topic; a writer commits changes;
frames delivered per second, commit-to-client latency, server CPU and RSS, client CPU.

For each stack (``sinal``, ``peer``) and each N, one fresh server and N fresh clients:

* ``paced``: the writer commits at a fixed rate (200/s) for a few seconds, capped so the
  phase asks for at most `paced_deliveries` frames in all (commits x N); delivered
  frames/s is frames / (last frame received - first commit). A server that keeps up
  delivers rate x N per second at a latency close to zero; one that does not falls behind
  and its latency grows with the backlog.
* ``burst``: the writer commits as fast as it can, `burst_deliveries` / N commits, and the
  run waits until every frame has arrived: delivered frames/s is the server's peak
  fan-out rate (and the latency is mostly queueing behind the burst).
* ``paced@<rate>`` (both stacks at one N, 1,000 by default): the paced phase at lower
  rates (50/s and 100/s), to show up to which rate each stack keeps its latency low.
* ``profile`` (Sinal at one N, optional): the paced phase again under `py-spy record`
  (non-blocking sampling), not counted in the numbers; the hottest frames go in the
  report.

The server runs pinned to the first CPU, the clients and the writer to the others
(`--no-pin` lets the kernel place them); PostgreSQL floats. The PostgreSQL backends of the
bench database are metered too. The clients are the compiled load client (bench.loadgen)
unless `python_client` asks for the Python one; either way each phase reports the
client's CPU and its cost per data frame received (us of its CPU / frame).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.harness import (
    BENCH_TOPIC,
    BenchDatabase,
    CpuPlan,
    ServerProcess,
    postgres_backend_pids,
    sinal_server,
)
from bench.loadclient import ClientPlan
from bench.loadgen import Clients, open_clients
from bench.peers import (
    DROP_SEED_NOTIFY_SQL,
    SEED_NOTIFY_SQL,
    available_stacks,
    socketio_server,
)
from bench.profile import Profile, top_line
from bench.writer import WritePlan, Writer

CLIENTS_PER_PROCESS = 2500


@dataclass
class FanoutOptions:
    clients: list[int] = field(default_factory=lambda: [100, 1000, 5000])
    stacks: list[str] = field(default_factory=lambda: ["sinal", "peer"])
    rate: float = 200.0
    paced_seconds: float = 6.0
    paced_deliveries: int = 1_000_000
    burst_deliveries: int = 1_000_000
    drain_timeout: float = 30.0
    client_processes: int = 0  # 0: one per 2,500 connections
    peer_source: str = "change_log"
    sweep_rates: list[float] = field(default_factory=lambda: [50.0, 100.0])
    sweep_at: int = 1000  # N at which both stacks also run paced at each sweep rate
    sweep_seconds: float = 3.0
    profile_at: int = 1000  # N at which Sinal is profiled with py-spy; 0: never
    profile_seconds: float = 4.0
    pin: bool = True
    python_client: bool = False  # the Python load client instead of the compiled one
    encoding: str = "msgpack"  # Sinal's subprotocol for the compiled client (or "json")


class PostgresMeter:
    """CPU of the bench database's PostgreSQL backends over a window."""

    def __init__(self, db: BenchDatabase) -> None:
        self.db = db
        self.procs: list[psutil.Process] = []
        self.cpu0 = 0.0
        self.t0 = 0.0

    def _cpu(self) -> float:
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def mark(self) -> None:
        self.procs = []
        for pid in postgres_backend_pids(self.db):
            with contextlib.suppress(psutil.Error):
                self.procs.append(psutil.Process(pid))
        self.cpu0 = self._cpu()
        self.t0 = time.perf_counter()

    def cpu_percent(self) -> float:
        wall = max(1e-9, time.perf_counter() - self.t0)
        return round(100 * (self._cpu() - self.cpu0) / wall, 1)


def start_server(stack: str, db: BenchDatabase, wd: Path, cpus: CpuPlan,
                 options: FanoutOptions) -> ServerProcess:
    if stack == "sinal":
        return sinal_server(db, wd, cpus=cpus.server).start()
    if options.peer_source == "notify":
        db.execute(SEED_NOTIFY_SQL)
    return socketio_server(db, wd, cpus=cpus.server, source=options.peer_source).start()


def stop_server(stack: str, server: ServerProcess, db: BenchDatabase,
                options: FanoutOptions) -> None:
    server.stop()
    if stack == "peer" and options.peer_source == "notify":
        db.execute(DROP_SEED_NOTIFY_SQL)


def wait_for_frames(clients: Clients, expected: int, timeout: float,
                    idle: float = 5.0) -> int:
    """Until `expected` frames arrived, nothing arrived for `idle` s, or `timeout`."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        frames = clients.frames()
        now = time.monotonic()
        if frames != last:
            last, last_change = frames, now
        if frames >= expected or now > deadline or now - last_change > idle:
            return frames
        time.sleep(0.2)


_PHASE_TAGS = itertools.cycle("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def next_phase_tag() -> str:
    return next(_PHASE_TAGS)


def run_phase(name: str, stack: str, n: int, rate: float, commits: int, db: BenchDatabase,
              server: ServerProcess, clients: Clients, cpus: CpuPlan,
              options: FanoutOptions) -> dict[str, Any]:
    tag = next_phase_tag()
    writer = Writer(WritePlan(db.url, rate, commits, cpus.load, phase=tag))
    pg_meter = PostgresMeter(db)
    try:
        clients.stats(reset=True, phase=tag)
        assert server.meter is not None
        server.meter.mark()
        pg_meter.mark()
        writer.start()
        written = writer.result()
        expected = written["commits"] * n
        wait_for_frames(clients, expected, options.drain_timeout)
        server_window = server.meter.window()
        pg_cpu = pg_meter.cpu_percent()
        stats = clients.stats(reset=True)
    finally:
        writer.close()
    span = (stats["lastAt"] - written["firstAt"]) if stats["lastAt"] else 0.0
    delivered_rate = stats["frames"] / span if span > 0 else 0.0
    client_cpu = 100 * stats["cpuSeconds"] / max(1e-9, server_window["wallSeconds"])
    received = stats["frames"] + stats["staleFrames"]
    return {
        "stack": stack, "clients": n, "phase": name,
        "commitRateAsked": rate or None,
        "commits": written["commits"], "writeSeconds": written["seconds"],
        "commitRate": written["rate"], "writerLateWrites": written["lateWrites"],
        "writerCpuPercent": written["cpuPercent"],
        "expectedFrames": expected, "frames": stats["frames"],
        "delivered": round(stats["frames"] / expected, 4) if expected else None,
        "deliverySeconds": round(span, 3),
        "framesPerSecond": round(delivered_rate),
        "latencyMs": stats["latencyMs"],
        "staleFrames": stats["staleFrames"],
        "resyncs": stats["resyncs"], "closes": stats["closes"],
        "serverCpuPercent": server_window["cpuPercent"],
        "serverRssMb": server_window["rssMb"], "serverPeakRssMb": server_window["peakRssMb"],
        "clientCpuPercent": round(client_cpu, 1),
        "clientCpuSeconds": round(stats["cpuSeconds"], 3),
        "clientSystemSeconds": stats.get("systemSeconds"),
        "clientUsPerFrame": round(1e6 * stats["cpuSeconds"] / received, 2) if received else None,
        "client": "python" if options.python_client else "compiled",
        "clientProcesses": len(clients.procs),
        "clientRecvCalls": stats.get("recvCalls"),
        "clientWakeups": stats.get("wakeups"),
        "offsetRegressions": stats.get("offsetRegressions"),
        "postgresCpuPercent": pg_cpu,
        "bytesReceived": stats["bytes"],
    }


def profile_phase(server: ServerProcess, db: BenchDatabase, options: FanoutOptions,
                  cpus: CpuPlan, wd: Path) -> dict[str, Any]:
    """py-spy on the server while the paced phase runs again; the hottest functions."""
    commits = max(1, int(options.rate * options.profile_seconds))
    writer = Writer(WritePlan(db.url, options.rate, commits, cpus.load, phase="z"))
    try:
        with Profile(server.pid, options.profile_seconds, wd / "profile-fanout.txt") as spy:
            time.sleep(0.5)
            writer.start()
            writer.result()
    finally:
        writer.close()
    return spy.summary


def run_stack_at(stack: str, n: int, db: BenchDatabase, wd: Path, cpus: CpuPlan,
                 options: FanoutOptions, log: Any) -> dict[str, Any]:
    token = db.token()
    server = start_server(stack, db, wd, cpus, options)
    result: dict[str, Any] = {"stack": stack, "clients": n, "phases": []}
    try:
        protocol = "sinal" if stack == "sinal" else "socketio"
        plan = ClientPlan(protocol, server.ws_port, n, token, (BENCH_TOPIC,),
                          heartbeat_interval=20.0, cpus=cpus.load)
        assert server.meter is not None
        server.meter.mark()
        t0 = time.perf_counter()
        with open_clients(plan, python=options.python_client,
                          processes=options.client_processes,
                          python_per_process=CLIENTS_PER_PROCESS,
                          encoding=options.encoding if stack == "sinal" else "msgpack"
                          ) as clients:
            connected = clients.wait_ready()
            connect_window = server.meter.window()
            result["connect"] = {**connected, "serverCpuPercent": connect_window["cpuPercent"],
                                 "wallSeconds": round(time.perf_counter() - t0, 2),
                                 "serverRssMb": connect_window["rssMb"]}
            log(f"  {stack:5s} N={n:5d}: {connected['ready']} connected in "
                f"{connected['seconds']:.1f} s, server RSS {connect_window['rssMb']} MB, "
                f"client CPU {connected.get('clientCpuSeconds', 'n/a')} s"
                + (f", failed {connected['failed']}" if connected["failed"] else ""))
            if connected["ready"] < n:
                result["error"] = f"only {connected['ready']} of {n} clients connected"
            ready_n = connected["ready"]
            if ready_n:
                paced_commits = max(1, min(int(options.rate * options.paced_seconds),
                                           options.paced_deliveries // ready_n))
                burst_commits = max(1, options.burst_deliveries // ready_n)
                phases: list[tuple[str, float, int]] = []
                if n == options.sweep_at:
                    phases += [(f"paced@{rate:g}", rate,
                                max(1, min(int(rate * options.sweep_seconds),
                                           options.paced_deliveries // ready_n)))
                               for rate in options.sweep_rates if rate != options.rate]
                phases += [("paced", options.rate, paced_commits), ("burst", 0.0, burst_commits)]
                for name, rate, commits in phases:
                    phase = run_phase(name, stack, ready_n, rate, commits, db, server,
                                      clients, cpus, options)
                    result["phases"].append(phase)
                    lat = phase["latencyMs"]
                    log(f"  {stack:5s} N={n:5d} {name:9s}: {phase['commits']} commits at "
                        f"{phase['commitRate']}/s -> {phase['framesPerSecond']:,} frames/s "
                        f"({100 * (phase['delivered'] or 0):.1f}% delivered), latency ms "
                        f"p50 {lat['p50']} p99 {lat['p99']} max {lat['max']}; server CPU "
                        f"{phase['serverCpuPercent']}% RSS {phase['serverRssMb']} MB; "
                        f"client CPU {phase['clientCpuPercent']}% "
                        f"({phase['clientUsPerFrame']} us/frame); postgres CPU "
                        f"{phase['postgresCpuPercent']}%")
                if stack == "sinal" and options.profile_at == n:
                    result["profile"] = profile_phase(server, db, options, cpus, wd)
                    clients.stats(reset=True)
                    log(f"  sinal N={n:5d} profile: {top_line(result['profile'], 3)}")
    finally:
        stop_server(stack, server, db, options)
    return result


def run_fanout(db: BenchDatabase, wd: Path, options: FanoutOptions, log: Any) -> dict[str, Any]:
    cpus = CpuPlan.for_machine(options.pin)
    out: dict[str, Any] = {"options": options.__dict__.copy(), "cpuPlan": cpus.describe(),
                           "runs": []}
    stacks = available_stacks(options.stacks, out, log)
    for n in options.clients:
        for stack in stacks:
            try:
                out["runs"].append(run_stack_at(stack, n, db, wd, cpus, options, log))
            except Exception as exc:  # one broken run must not lose the others
                out["runs"].append({"stack": stack, "clients": n, "error": repr(exc),
                                    "phases": []})
                log(f"  {stack} N={n}: FAILED {exc!r}")
    out["ratios"] = ratios(out["runs"])
    return out


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sinal/peer per N and phase: frames/s (higher is better) and p99 (lower is better)."""
    by_key = {(r["stack"], r["clients"], p["phase"]): p for r in runs for p in r["phases"]}
    rows = []
    for (stack, n, phase), sinal in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if stack != "sinal":
            continue
        peer = by_key.get(("peer", n, phase))
        if peer is None:
            continue
        row: dict[str, Any] = {"clients": n, "phase": phase}
        if peer["framesPerSecond"]:
            row["framesPerSecondRatio"] = round(sinal["framesPerSecond"]
                                                / peer["framesPerSecond"], 2)
        if sinal["latencyMs"]["p99"] and peer["latencyMs"]["p99"]:
            row["p99Ratio"] = round(sinal["latencyMs"]["p99"] / peer["latencyMs"]["p99"], 2)
        if peer["serverCpuPercent"]:
            row["serverCpuRatio"] = round(sinal["serverCpuPercent"]
                                          / peer["serverCpuPercent"], 2)
        if peer["serverRssMb"]:
            row["serverRssRatio"] = round(sinal["serverRssMb"] / peer["serverRssMb"], 2)
        rows.append(row)
    return rows
