"""`python -m bench.loadgen`: build the compiled load client, or run a connect storm.

    python -m bench.loadgen build                  # compile bench/loadgen/build/loadgen
    python -m bench.loadgen storm --connections 66000 --nodes 4

`storm` shows that the load client passes 64,000 connections: one throw-away database,
K Sinal nodes (one process holds at most its hard open-files limit in sockets, 20,000 on
the bench box, so more connections need more nodes), N connections spread round-robin
over the nodes' ports and over source addresses 127.0.0.2.. (one per ~25,000
connections). Once every connection has been tried it holds them `--hold` seconds with
heartbeats running, counts the established sockets per source address in
/proc/net/tcp, and writes bench/results/<stamp>-storm.json. Heartbeats are sparse here
(every 60 s both ways, 5 minutes of silence allowed): the storm measures how many
connections the client reaches, and with tens of thousands of them the nodes' heartbeat
work would slow the connecting down.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import (
    BENCH_DIR,
    BENCH_TOPIC,
    DEFAULT_ADMIN_URL,
    BenchDatabase,
    CpuPlan,
    ServerProcess,
    machine_info,
    raise_fd_limit,
    sinal_server,
    workdir,
)
from bench.loadclient import ClientPlan
from bench.loadgen import BINARY, CompiledClients, build, connections_per_process


def established_by_source(ports: set[int]) -> Counter[str]:
    """Established IPv4 sockets towards `ports`, by local address (the client's side)."""
    counts: Counter[str] = Counter()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state != "01" or int(remote.split(":")[1], 16) not in ports:
                continue
            address = socket.inet_ntoa(struct.pack("<I", int(local.split(":")[0], 16)))
            counts[address] += 1
    return counts


def storm(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(65536)
    n, nodes = args.connections, args.nodes
    per_node = math.ceil(n / nodes)
    if per_node > connections_per_process():
        raise SystemExit(f"{per_node} connections per node is over what one process may hold "
                         f"({connections_per_process()}): use more --nodes")
    cpus = CpuPlan.for_machine(not args.no_pin)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out: dict[str, Any] = {"stamp": stamp, "command": "python -m bench.loadgen "
                           + " ".join(sys.argv[1:]), "machine": machine_info(),
                           "cpuPlan": cpus.describe(), "connections": n, "nodes": nodes}
    db = BenchDatabase(args.database_url)
    servers: list[ServerProcess] = []
    try:
        db.create()
        with workdir() as wd:
            for j in range(nodes):
                (wd / f"node{j}").mkdir()
                servers.append(sinal_server(db, wd / f"node{j}", cpus=cpus.server, settings={
                    "MAX_CONCURRENT_CONNECTIONS": str(per_node + 1000),
                    "WEBSOCKET_HEARTBEAT_INTERVAL": str(int(args.heartbeat * 1000)),
                    "WEBSOCKET_CONNECTION_TIMEOUT": str(int(5 * args.heartbeat * 1000))}).start())
            ports = tuple(s.ws_port for s in servers)
            plan = ClientPlan("sinal", ports[0], n, db.token(), (BENCH_TOPIC,),
                              heartbeat_interval=args.heartbeat, cpus=cpus.load,
                              handshake_window=args.window, handshake_timeout=60.0)
            for server in servers:
                assert server.meter is not None
                server.meter.mark()
            print(f"storm: {n:,} connections to {nodes} Sinal node(s) on ports {ports}",
                  flush=True)
            t0 = time.monotonic()
            with CompiledClients(plan, ports=ports) as clients:
                progress = clients.stats(brief=True)
                while not clients.all_tried and time.monotonic() < t0 + args.timeout:
                    time.sleep(5)
                    progress = clients.stats(brief=True)
                    print(f"storm: {time.monotonic() - t0:6.0f} s: {progress['ready']:,} ready, "
                          f"{sum(progress['failed'].values())} failed", flush=True)
                if not clients.all_tried:
                    out["error"] = f"not every connection was tried in {args.timeout:.0f} s"
                ready = clients.wait_ready(timeout=0) if clients.all_tried else {
                    "ready": progress["ready"], "failed": progress["failed"],
                    "seconds": round(time.monotonic() - t0, 1),
                    "connectMs": progress["connectMs"],
                    "clientCpuSeconds": progress["cpuSeconds"], "sourceAddresses": None}
                print(f"storm: {ready['ready']:,} ready in {ready['seconds']:.1f} s "
                      f"from {ready['sourceAddresses']} source address(es) by "
                      f"{len(clients.procs)} loadgen process(es); failed {ready['failed']}",
                      flush=True)
                clients.stats(reset=True)
                time.sleep(args.hold)
                by_source = established_by_source(set(ports))
                held = clients.stats()
                windows = [s.meter.window() for s in servers if s.meter is not None]
                out.update({
                    "ready": ready["ready"], "failed": ready["failed"],
                    "connectSeconds": ready["seconds"], "connectMs": ready["connectMs"],
                    "clientCpuSecondsConnect": ready["clientCpuSeconds"],
                    "clientProcesses": len(clients.procs),
                    "sourceAddresses": ready["sourceAddresses"],
                    "establishedBySourceAddress": dict(sorted(by_source.items())),
                    "holdSeconds": args.hold,
                    "stillReadyAfterHold": held["ready"], "closesDuringHold": held["closes"],
                    "clientCpuSecondsHold": round(held["cpuSeconds"], 3),
                    "heartbeatsSent": held["heartbeats"],
                    "serverRssMb": [w["rssMb"] for w in windows],
                    "serverCpuSeconds": [w["cpuSeconds"] for w in windows],
                })
    finally:
        for server in servers:
            server.stop()
        db.drop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="compile the load client (when a source is newer)")
    st = sub.add_parser("storm", help="N connections to K Sinal nodes, held, then counted")
    st.add_argument("--connections", type=int, default=66_000)
    st.add_argument("--nodes", type=int, default=4)
    st.add_argument("--hold", type=float, default=10.0, help="seconds to hold them")
    st.add_argument("--heartbeat", type=float, default=60.0,
                    help="seconds between heartbeats, both ways")
    st.add_argument("--window", type=int, default=128, help="handshakes in flight/process")
    st.add_argument("--timeout", type=float, default=1800.0, help="seconds to connect them")
    st.add_argument("--no-pin", action="store_true")
    st.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                             DEFAULT_ADMIN_URL))
    st.add_argument("--results", default=str(BENCH_DIR / "results"))
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build())
        return 0
    result = storm(args)
    path = Path(args.results) / f"{result['stamp']}-storm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"wrote {path} ({BINARY.name} client)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
