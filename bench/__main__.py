"""`python -m bench`: run the bench parts, write bench/results/<UTC stamp>.{json,md,png}.

    python -m bench                        # everything (about 7 minutes on 2 cores)
    python -m bench fanout --clients 1000  # one part, one N
    python -m bench connections --connections 5000
    python -m bench connections --connections 100000 --workers 2 --stacks sinal
    python -m bench rest scenario --no-pin
    python -m bench workers                # 1 vs 2 workers, 1 node vs 2 behind nginx
    python -m bench aggregates --dashboard-subscribers 1000

Every part uses one throw-away database (`sinal_bench_<stamp>_<pid>`, created on the
PostgreSQL at --database-url and dropped at the end) and servers on 127.0.0.1 free ports,
all stopped by the end of the run. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.aggregates import AggregatesOptions, run_aggregates
from bench.connections import ConnectionsOptions, run_connections
from bench.fanout import FanoutOptions, run_fanout
from bench.harness import (
    BENCH_DIR,
    DEFAULT_ADMIN_URL,
    BenchDatabase,
    CpuPlan,
    machine_info,
    other_load,
    raise_fd_limit,
    workdir,
)
from bench.memory import MemoryOptions, run_memory
from bench.report import write
from bench.rest import RestOptions, run_rest
from bench.scenario import ScenarioOptions, run_scenario
from bench.storms import StormOptions, run_connect, run_notify
from bench.workers import WorkersOptions, run_workers

PARTS = ("fanout", "connections", "rest", "scenario", "aggregates", "notify", "connect",
         "memory", "workers")
DEFAULT_PARTS = ("fanout", "connections", "rest", "scenario", "aggregates")
# the connections part's steps below its target (RSS after each: the plot)
CONNECTION_STEPS = (1000, 2500, 5000, 7500, 10_000, 25_000, 50_000, 75_000)
# rough seconds each part needs on 2 cores with the default options (for --budget)
ESTIMATES = {"fanout": 200.0, "connections": 80.0, "rest": 35.0, "scenario": 80.0,
             "aggregates": 40.0, "notify": 120.0, "connect": 240.0, "memory": 90.0,
             "workers": 170.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", metavar="part",
                        help=f"any of {', '.join(PARTS)} (default: all but memory)")
    parser.add_argument("--clients", default="100,1000,5000",
                        help="fan-out subscriber counts, comma-separated")
    parser.add_argument("--stacks", default="sinal,peer", help="sinal, peer or both")
    parser.add_argument("--rate", type=float, default=200.0, help="paced commits/s")
    parser.add_argument("--paced-seconds", type=float, default=6.0)
    parser.add_argument("--burst-deliveries", type=int, default=1_000_000,
                        help="frames asked of a burst phase in all (commits = this / N)")
    parser.add_argument("--peer-source", choices=("change_log", "notify"), default="change_log",
                        help="how the peer learns of changes (see bench/peers/socketio_peer.js)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip py-spy (fan-out, idle connections, REST)")
    parser.add_argument("--profile-at", type=int, default=1000,
                        help="N at which Sinal is profiled (fan-out)")
    parser.add_argument("--connections", type=int, default=10_000,
                        help="idle connections to hold")
    parser.add_argument("--hold", type=float, default=12.0, help="seconds to hold them")
    parser.add_argument("--heartbeat-ms", type=int, default=5000)
    parser.add_argument("--memory-connections", type=int, default=5000,
                        help="idle connections the memory part traces")
    parser.add_argument("--users", type=int, default=10_000,
                        help="connected users of the notification storm (one socket each)")
    parser.add_argument("--notify-rate", type=float, default=1000.0,
                        help="notifications per second in the notification storm")
    parser.add_argument("--notify-seconds", type=float, default=5.0)
    parser.add_argument("--connects", default="10000,50000",
                        help="connect storm sizes, comma-separated")
    parser.add_argument("--handshakes", type=int, default=0,
                        help="handshakes in flight in the storms, over all compiled client "
                             "processes (0: 128 per 2,500 connections)")
    parser.add_argument("--workers", type=int, default=1,
                        help="run Sinal as `sinal serve --workers N` in the connections, "
                             "notify and connect parts (nothing pinned when N > 1; the peer "
                             "stays one process)")
    parser.add_argument("--wrk-seconds", type=float, default=5.0)
    parser.add_argument("--rest-url", default="",
                        help="measure REST on this running server instead of a fresh node")
    parser.add_argument("--time-scale", type=float, default=1 / 8,
                        help="scenario durations and think times x this")
    parser.add_argument("--dashboard-subscribers", type=int, default=1000,
                        help="dashboard subscribers of the aggregates part")
    parser.add_argument("--aggregate-changes", type=int, default=20_000,
                        help="changes the aggregates part applies")
    parser.add_argument("--quick", action="store_true",
                        help="small run to try the bench (N 100,1000; 2,000 connections; "
                             "scenario x 1/16)")
    parser.add_argument("--py-client", action="store_true",
                        help="fan-out, connections and the storms with the Python load "
                             "client (bench/loadclient.py) instead of the compiled one "
                             "(bench/loadgen), for comparison")
    parser.add_argument("--ws-encoding", choices=("msgpack", "json"), default="msgpack",
                        help="Sinal's subprotocol for the compiled client (fan-out, "
                             "connections, storms)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the server to CPU 0 and the load to the others")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 DEFAULT_ADMIN_URL),
                        help="PostgreSQL to create the bench database on")
    parser.add_argument("--results", default=str(BENCH_DIR / "results"))
    parser.add_argument("--budget", type=float, default=570.0,
                        help="seconds; a part that would not fit is skipped (0: no limit)")
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in (*PARTS, "all")]
    if unknown:
        parser.error(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS)}, all")
    if not args.parts or "all" in args.parts:
        args.parts = list(DEFAULT_PARTS)
    if args.py_client and args.ws_encoding != "msgpack":
        parser.error("the Python load client speaks MessagePack only")
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.quick:
        args.clients = "100,1000"
        args.connections = min(args.connections, 2000)
        args.time_scale = min(args.time_scale, 1 / 16)
        args.wrk_seconds = min(args.wrk_seconds, 3.0)
        args.paced_seconds = min(args.paced_seconds, 3.0)
        args.burst_deliveries = min(args.burst_deliveries, 300_000)
        args.aggregate_changes = min(args.aggregate_changes, 5_000)
    return args


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every cleanup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    fds = raise_fd_limit(262144)
    pin = not args.no_pin
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    t0 = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {message}", flush=True)

    results: dict[str, Any] = {
        "stamp": stamp,
        "startedAt": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine_info(),
        "cpuPlan": CpuPlan.for_machine(pin).describe(),
        "openFilesLimit": fds,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backgroundCpuPercent": {},
        "notes": [],
    }
    stacks = [s for s in args.stacks.split(",") if s]
    if args.workers > 1:
        results["notes"].append(
            f"--workers {args.workers}: Sinal ran as `sinal serve --workers {args.workers}` in "
            "the connections, notify and connect parts, with nothing pinned there (the CPU "
            "plan above is the other parts'); the peer is one Node process")
    storm_client: dict[str, Any] = {"python_client": args.py_client,
                                    "encoding": args.ws_encoding,
                                    "handshakes": args.handshakes, "workers": args.workers}
    runners: dict[str, Callable[[BenchDatabase, Path], dict[str, Any]]] = {
        "fanout": lambda db, wd: run_fanout(db, wd, FanoutOptions(
            clients=[int(n) for n in args.clients.split(",") if n], stacks=stacks,
            rate=args.rate, paced_seconds=args.paced_seconds,
            burst_deliveries=args.burst_deliveries, peer_source=args.peer_source,
            profile_at=0 if args.no_profile else args.profile_at, pin=pin,
            python_client=args.py_client, encoding=args.ws_encoding), log),
        "connections": lambda db, wd: run_connections(db, wd, ConnectionsOptions(
            target=args.connections,
            steps=[s for s in CONNECTION_STEPS if s < args.connections] + [args.connections],
            heartbeat_ms=args.heartbeat_ms, hold_seconds=args.hold, stacks=stacks, pin=pin,
            profile=not args.no_profile, python_client=args.py_client,
            encoding=args.ws_encoding, workers=args.workers), log),
        "rest": lambda db, wd: run_rest(db, wd, RestOptions(
            wrk_seconds=args.wrk_seconds, url=args.rest_url, pin=pin,
            profile=not args.no_profile), log),
        "scenario": lambda db, wd: run_scenario(db, wd, ScenarioOptions(
            time_scale=args.time_scale, pin=pin), log),
        "aggregates": lambda db, wd: run_aggregates(AggregatesOptions(
            changes=args.aggregate_changes, subscribers=args.dashboard_subscribers), log),
        "notify": lambda db, wd: run_notify(db, wd, StormOptions(
            users=args.users, notify_rate=args.notify_rate,
            notify_seconds=args.notify_seconds, stacks=stacks, pin=pin, **storm_client), log),
        "connect": lambda db, wd: run_connect(db, wd, StormOptions(
            connects=[int(n) for n in args.connects.split(",") if n], stacks=stacks,
            pin=pin, profile_seconds=0 if args.no_profile else 8.0, **storm_client), log),
        # its own database per configuration (bench/workers.py), not the shared one
        "workers": lambda db, wd: run_workers(WorkersOptions(
            wrk_seconds=args.wrk_seconds,
            clients=max(int(n) for n in args.clients.split(",") if n),
            rates=tuple(sorted({args.rate, 1000.0}))), log),
        "memory": lambda db, wd: run_memory(db, wd, MemoryOptions(
            connections=args.memory_connections, heartbeat_ms=args.heartbeat_ms, pin=pin), log),
    }
    log(f"machine: {results['machine']['cpus']} CPUs, load {results['machine']['loadAverage']}; "
        f"{results['cpuPlan']}; parts: {', '.join(args.parts)}")
    db = BenchDatabase(args.database_url)
    try:
        db.create()
        log(f"database {db.name} created")
        with workdir() as wd:
            for part in args.parts:
                elapsed = time.monotonic() - t0
                if args.budget and elapsed + ESTIMATES[part] > args.budget:
                    results["notes"].append(f"{part} skipped: {elapsed:.0f} s spent, it needs "
                                            f"about {ESTIMATES[part]:.0f} s of a "
                                            f"{args.budget:.0f} s budget")
                    log(f"{part}: skipped (budget)")
                    continue
                background = other_load()
                results["backgroundCpuPercent"][part] = background
                log(f"{part}: start (other processes use {background}% CPU)")
                part_t0 = time.monotonic()
                try:
                    results[part] = runners[part](db, wd)
                except Exception as exc:  # report what ran; say what failed
                    results[part] = {"error": repr(exc)}
                    results["notes"].append(f"{part} failed: {exc!r}")
                    log(f"{part}: FAILED {exc!r}")
                results[part]["seconds"] = round(time.monotonic() - part_t0, 1)
                log(f"{part}: done in {results[part]['seconds']} s")
    except KeyboardInterrupt:
        results["notes"].append("interrupted: the results are partial")
        log("interrupted")
    finally:
        db.drop()
        log("database dropped")
    results["seconds"] = round(time.monotonic() - t0, 1)
    results["notes"] += automatic_notes(results)
    md = write(results, Path(args.results))
    log(f"wrote {md} and {md.with_suffix('.json').name}")
    print()
    print(md.read_text())
    return 0


def automatic_notes(results: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    for run in results.get("connections", {}).get("runs", []):
        if run.get("lostBeforeHold"):
            notes.append(f"connections {run['stack']}: {run['lostBeforeHold']} connections were "
                         f"closed by the server before the hold: {run.get('closesBeforeHold')}")
        if run.get("stepTimedOut"):
            notes.append(f"connections {run['stack']}: {run['stepTimedOut']}; held "
                         f"{run.get('held', 0):,} in the hold")
    fan = results.get("fanout", {})
    for run in fan.get("runs", []):
        if run.get("error"):
            notes.append(f"fan-out {run['stack']} N={run['clients']}: {run['error']}")
        for p in run.get("phases", []):
            if p["clientCpuPercent"] > 85 * p["clientProcesses"]:
                notes.append(f"fan-out {p['stack']} N={p['clients']} {p['phase']}: the load "
                             f"client used {p['clientCpuPercent']}% CPU "
                             f"({p['clientProcesses']} process(es)): it may have been the "
                             "bottleneck")
            if p["delivered"] is not None and p["delivered"] < 0.999:
                notes.append(f"fan-out {p['stack']} N={p['clients']} {p['phase']}: only "
                             f"{100 * p['delivered']:.1f}% of {p['expectedFrames']:,} frames "
                             "arrived before the drain timeout")
            if p.get("offsetRegressions"):
                notes.append(f"fan-out {p['stack']} N={p['clients']} {p['phase']}: "
                             f"{p['offsetRegressions']} data_update frames repeated an offset or "
                             "went back (each change should reach each subscriber once)")
            if p.get("client") == "compiled" and (p.get("clientUsPerFrame") or 0) > 3:
                notes.append(f"fan-out {p['stack']} N={p['clients']} {p['phase']}: the compiled "
                             f"load client used {p['clientUsPerFrame']} us of CPU per frame "
                             "(its target is under 3)")
            if p["resyncs"] or p["closes"]:
                notes.append(f"fan-out {p['stack']} N={p['clients']} {p['phase']}: "
                             f"{p['resyncs']} resync frames, closes {p['closes']}")
        profile = run.get("profile", {})
        if profile.get("self"):
            top = ", ".join(f"{s['function']} {s['percent']}%" for s in profile["self"][:4])
            notes.append(f"py-spy, Sinal at N={run['clients']} paced: {top} (self time)")
    background = results.get("backgroundCpuPercent", {})
    busy = {k: v for k, v in background.items() if v > 20}
    if busy:
        notes.append("the machine was shared: other processes used "
                     + ", ".join(f"{v}% CPU before {k}" for k, v in busy.items())
                     + " (100% = one core); numbers are lower than on an idle box")
    return notes


if __name__ == "__main__":
    sys.exit(main())
