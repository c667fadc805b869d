"""bench/connections: how many idle connections one node holds with heartbeats running,
and its RSS per connection.

The node runs with WEBSOCKET_HEARTBEAT_INTERVAL lowered (5 s) so heartbeats really flow
both ways during the run, WEBSOCKET_CONNECTION_TIMEOUT 3 intervals, and
MAX_CONCURRENT_CONNECTIONS above the target. Connections are added in steps (RSS is
read after each, for the plot); then all of them are held for a few heartbeat intervals
while clients send heartbeats and count the server's. A connection that the server closes
during the hold (heartbeat timeout, anything) counts as lost. The peer (socket.io) runs
the same steps; its clients emit `heartbeat` events and answer Engine.IO pings.

The clients are the compiled load client (bench.loadgen; `python_client` for the Python
one), one group of processes per step; connection numbers run on over the steps, so the
source addresses (127.0.0.2, .3, ...) are spread over the whole target. Its CPU is
reported for the connect storm and for the hold.

`workers` > 1 runs Sinal as `sinal serve --workers N` (bench.workerset): the kernel spreads
the connections over the workers, RSS and CPU are summed over the parent and its workers
(RSS per connection is that sum's growth / connections), MAX_CONCURRENT_CONNECTIONS and
WEBSOCKET_PRELOGIN_PER_ADDRESS are set per worker above the whole target, nothing is
pinned (the workers need every core), py-spy records the first worker, and the run
reports each worker's connections (its GET /api/supervisor), RSS and open descriptors.
Each process holds at most the hard open-files limit in sockets: the run says so up front
when the target does not fit in the server's processes (the peer is one Node process).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BENCH_TOPIC, BenchDatabase, CpuPlan, ServerProcess, sinal_server
from bench.loadclient import ClientPlan
from bench.loadgen import Clients, open_clients
from bench.peers import available_stacks, socketio_server
from bench.profile import Profile, top_line
from bench.workerset import census, census_line, does_not_fit, first_worker, start_workers

CLIENTS_PER_PROCESS = 2500


@dataclass
class ConnectionsOptions:
    target: int = 10_000
    steps: list[int] = field(default_factory=lambda: [1000, 2500, 5000, 7500, 10_000])
    heartbeat_ms: int = 5000
    hold_seconds: float = 12.0
    stacks: list[str] = field(default_factory=lambda: ["sinal", "peer"])
    pin: bool = True
    profile: bool = True  # py-spy on Sinal during the hold
    step_timeout: float = 300.0  # seconds a step may take to connect
    python_client: bool = False  # the Python load client instead of the compiled one
    encoding: str = "msgpack"  # Sinal's subprotocol for the compiled client (or "json")
    workers: int = 1  # Sinal's `serve --workers N`; the peer is always one process


def _server(stack: str, db: BenchDatabase, wd: Path, cpus: CpuPlan,
            options: ConnectionsOptions) -> ServerProcess:
    if stack == "sinal":
        # the limits are per worker: each is set above the whole target, since the kernel
        # decides how many connections each worker gets
        return start_workers(sinal_server(db, wd, cpus=cpus.server, settings={
            "WEBSOCKET_HEARTBEAT_INTERVAL": str(options.heartbeat_ms),
            "WEBSOCKET_CONNECTION_TIMEOUT": str(3 * options.heartbeat_ms),
            "MAX_CONCURRENT_CONNECTIONS": str(options.target + 1000),
            # every client comes from a handful of loopback addresses
            "WEBSOCKET_PRELOGIN_PER_ADDRESS": str(options.target + 1000),
        }), options.workers, timeout=120)
    return socketio_server(db, wd, cpus=cpus.server).start()


def run_stack(stack: str, db: BenchDatabase, wd: Path, cpus: CpuPlan,
              options: ConnectionsOptions, log: Any) -> dict[str, Any]:
    token = db.token()
    steps = sorted({s for s in options.steps if s < options.target} | {options.target})
    workers = options.workers if stack == "sinal" else 1
    server = _server(stack, db, wd, cpus, options)
    groups: list[Clients] = []
    result: dict[str, Any] = {"stack": stack, "target": options.target, "steps": [],
                              "workers": workers}
    too_many = does_not_fit(options.target, workers)
    if too_many:
        result["fdLimit"] = too_many
        log(f"  {stack:5s} {too_many}")
    try:
        assert server.meter is not None
        time.sleep(1.0)
        baseline = server.meter.rss()
        result["baselineRssMb"] = round(baseline / 2**20, 1)
        result["steps"].append({"connections": 0, "rssMb": result["baselineRssMb"]})
        held = opened = 0
        connect_cpu = 0.0
        t0 = time.perf_counter()
        for step in steps:
            size = step - held
            # the load client spreads connections over source addresses 127.0.0.2 and up
            # once one address would run out of ephemeral ports (bench/loadgen)
            plan = ClientPlan("sinal" if stack == "sinal" else "socketio", server.ws_port,
                              size, token, (BENCH_TOPIC,),
                              heartbeat_interval=options.heartbeat_ms / 1000, cpus=cpus.load)
            group = open_clients(plan, python=options.python_client,
                                 python_per_process=CLIENTS_PER_PROCESS,
                                 encoding=options.encoding if stack == "sinal" else "msgpack",
                                 index_base=opened, planned_total=options.target)
            opened += size
            groups.append(group)
            try:
                report = group.wait_ready(timeout=options.step_timeout)
            except TimeoutError:
                # keep the numbers: the step as far as it got; its connections are dropped
                # and the hold goes on with the steps that completed
                partial = group.stats()
                connect_cpu += partial["cpuSeconds"]
                rss = server.meter.rss()
                group.close()
                groups.remove(group)
                result["steps"].append({"connections": held + partial["ready"],
                                        "rssMb": round(rss / 2**20, 1),
                                        "connectSeconds": options.step_timeout,
                                        "connectMs": partial["connectMs"],
                                        "failed": partial["failed"], "timedOut": True})
                result["stepTimedOut"] = (f"{partial['ready']:,} of {size:,} connections of the "
                                          f"step to {step:,} ready after "
                                          f"{options.step_timeout:.0f} s: step dropped")
                log(f"  {stack:5s} step to {step}: {result['stepTimedOut']}")
                break
            held += report["ready"]
            connect_cpu += report.get("clientCpuSeconds", 0.0)
            time.sleep(0.5)
            rss = server.meter.rss()
            result["steps"].append({"connections": held, "rssMb": round(rss / 2**20, 1),
                                    "connectSeconds": report["seconds"],
                                    "connectMs": report["connectMs"],
                                    "sourceAddresses": report.get("sourceAddresses"),
                                    "highestSourceAddress": report.get("highestSourceAddress"),
                                    "addressRetries": report.get("addressRetries"),
                                    "failed": report["failed"]})
            log(f"  {stack:5s} {held:6d} connections, RSS {rss / 2**20:.1f} MB"
                + (f", failed {report['failed']}" if report["failed"] else ""))
            if report["ready"] < size:
                break
        result["connectSeconds"] = round(time.perf_counter() - t0, 1)
        result["clientCpuSecondsConnect"] = round(connect_cpu, 2) \
            if not options.python_client else None
        # what the steps left: connections the server closed while later steps connected
        # are lost before the hold, not in it
        before = [group.stats(reset=True) for group in groups]
        at_hold = sum(s["ready"] for s in before)
        server.meter.mark()
        if stack == "sinal" and options.profile:
            with Profile(first_worker(server, workers), options.hold_seconds - 1,
                         wd / "profile-idle.txt") as spy:
                time.sleep(options.hold_seconds)
            result["profile"] = spy.summary
        else:
            time.sleep(options.hold_seconds)
        window = server.meter.window()
        stats = [group.stats() for group in groups]
        still = sum(s["ready"] for s in stats)
        client_cpu = sum(s["cpuSeconds"] for s in stats)
        closes: dict[str, int] = {}
        for s in stats:
            for reason, count in s["closes"].items():
                closes[reason] = closes.get(reason, 0) + count
        closes_before: dict[str, int] = {}
        for s in before:
            for reason, count in s["closes"].items():
                closes_before[reason] = closes_before.get(reason, 0) + count
        rss = server.meter.rss()
        if stack == "sinal":
            found = census(server, token, workers)
            result["byWorker"] = found
            log(f"  {stack:5s} {census_line(found)}")
        result.update({
            "held": held,
            "heldAtHoldStart": at_hold,
            "lostBeforeHold": held - at_hold,
            "closesBeforeHold": closes_before,
            "stillConnectedAfterHold": still,
            "lostDuringHold": at_hold - still,
            "closes": closes,
            "holdSeconds": options.hold_seconds,
            "clientHeartbeatsSent": sum(s["heartbeats"] for s in stats),
            "serverFramesReceived": sum(s["controlFrames"] for s in stats),
            "serverCpuPercentIdle": window["cpuPercent"],
            "client": "python" if options.python_client else "compiled",
            "clientProcesses": sum(len(group.procs) for group in groups),
            "clientCpuPercentHold": round(100 * client_cpu / window["wallSeconds"], 2),
            "clientCpuSecondsHold": round(client_cpu, 3),
            "rssMb": round(rss / 2**20, 1),
            "peakRssMb": window["peakRssMb"],
            "rssPerConnectionKb": round((rss - baseline) / max(1, at_hold) / 1024, 2),
        })
        if held > at_hold:
            log(f"  {stack:5s} {held - at_hold} connections closed by the server before the "
                f"hold: {closes_before}")
        log(f"  {stack:5s} held {at_hold} for {options.hold_seconds:.0f} s: {still} still open, "
            f"RSS {result['rssMb']} MB ({result['rssPerConnectionKb']} KB/connection), "
            f"idle CPU {window['cpuPercent']}%, {result['clientHeartbeatsSent']} heartbeats "
            f"sent, {result['serverFramesReceived']} server frames received; client CPU "
            f"{result['clientCpuPercentHold']}% (hold), {result['clientCpuSecondsConnect']} s "
            f"(connecting, {result['connectSeconds']} s)")
        if result.get("profile", {}).get("self"):
            log(f"  sinal idle profile: {top_line(result['profile'])}")
    finally:
        for group in groups:
            group.close()
        server.stop()
    return result


def run_connections(db: BenchDatabase, wd: Path, options: ConnectionsOptions,
                    log: Any) -> dict[str, Any]:
    # workers need every core: with more than one nothing is pinned
    cpus = CpuPlan.for_machine(options.pin and options.workers <= 1)
    out: dict[str, Any] = {"options": options.__dict__.copy(), "cpuPlan": cpus.describe(),
                           "runs": []}
    for stack in available_stacks(options.stacks, out):
        try:
            out["runs"].append(run_stack(stack, db, wd, cpus, options, log))
        except Exception as exc:  # keep the other stack's numbers
            out["runs"].append({"stack": stack, "error": repr(exc), "steps": []})
            log(f"  {stack}: FAILED {exc!r}")
    return out
