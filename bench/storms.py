"""bench/storms: a notification storm and a connect storm, Sinal and the peer side by side.

* ``notify``: U users (10,000 by default), each with one connection subscribed to
  `purchase_request_changed` (every requester is a subscription group of their own), and a
  writer that inserts N notifications per second (1,000), each for the next user in turn,
  so consecutive notifications go to distinct users. Latency = commit to the client's
  receive of the `notification` frame (the marker rides in the message). Reported: p50,
  p99, delivered, server CPU. This is the case route-by-key is for: each notification
  must cost the same whether 100 or 10,000 users are connected.
* ``connect``: for each N (10,000 and 50,000), a fresh server and N clients opening
  as fast as their handshake windows allow, every one `connect` + `subscribe`; reported:
  seconds until all are subscribed, connect-to-subscribed p50/p99, server CPU and RSS.

The clients are the compiled load client (bench.loadgen; `python_client` for the Python
one, bench/loadclient.py), built by `clients_for`. Both open at most 128 handshakes per
client process at once; so that the storm offers the server the same concurrency whatever
the client, `handshakes` in flight in all (0: 128 per 2,500 connections, what the Python
client's one process per 2,500 gave) are shared over the compiled client's processes.
Past about 25,000 connections to one port the clients connect from several loopback
addresses (127.0.0.2, .3, ...), each with its own ephemeral ports. The client's CPU
(getrusage of its processes) is reported next to the server's.

`workers` > 1 runs Sinal as `sinal serve --workers N` (bench.workerset; nothing pinned);
the peer is always one Node process. A server process holds at most the hard open-files
limit in sockets (20,000 on the bench box): a connect storm past that needs workers, or a
higher limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.harness import JWT_SECRET, BenchDatabase, CpuPlan, ServerProcess, sinal_server
from bench.loadclient import ClientPlan
from bench.loadgen import Clients, default_processes, open_clients
from bench.peers import available_stacks, socketio_server
from bench.profile import Profile, top_line
from bench.workerset import census, census_line, does_not_fit, first_worker, start_workers
from bench.writer import WritePlan, Writer

CLIENTS_PER_PROCESS = 2500  # the Python client's; and 128 handshakes in flight per 2,500
WINDOW = 128
PORTS_PER_ADDRESS = 25_000  # below the kernel's default ephemeral range (~28,000)
NOTIFY_TOPIC = "purchase_request_changed"
# the marker first (bench.writer passes it as the first parameter), then the user count;
# nextval runs once per statement (a subquery without FROM), so each insert is the next user
NOTIFY_SQL = ("INSERT INTO notifications (user_id, kind, message) "
              "SELECT u.id, 'order_issued', m.message "
              "FROM (SELECT %s::text AS message, nextval('bench_user_turn') %% %s AS n) AS m "
              "JOIN bench_users AS u USING (n)")


def clients_for(plan: ClientPlan, options: StormOptions) -> Clients:
    """The load client for a plan: the compiled one, `handshakes` in flight shared over its
    processes (it picks source addresses itself), or the Python one (one process per
    2,500 connections, source addresses from here)."""
    n = plan.connections
    if options.python_client:
        if n > PORTS_PER_ADDRESS and not plan.source_hosts:
            hosts = math.ceil(n / PORTS_PER_ADDRESS)
            plan = replace(plan, source_hosts=tuple(f"127.0.0.{k + 2}" for k in range(hosts)))
        return open_clients(plan, python=True, python_per_process=CLIENTS_PER_PROCESS)
    processes = default_processes(n, plan.cpus)
    in_flight = options.handshakes or WINDOW * math.ceil(n / CLIENTS_PER_PROCESS)
    plan = replace(plan, handshake_window=max(1, math.ceil(in_flight / processes)))
    return open_clients(plan, processes=processes, encoding=options.encoding)


def _client_cpu(clients: Clients) -> float:
    """CPU seconds of the client's processes since they started (or the last reset)."""
    return round(float(clients.stats()["cpuSeconds"]), 3)


@dataclass
class StormOptions:
    users: int = 10_000
    notify_rate: float = 1000.0
    notify_seconds: float = 5.0
    connects: list[int] = field(default_factory=lambda: [10_000, 50_000])
    stacks: list[str] = field(default_factory=lambda: ["sinal", "peer"])
    drain_timeout: float = 30.0
    pin: bool = True
    profile_seconds: float = 8.0  # py-spy on Sinal during the first connect storm; 0: no
    python_client: bool = False  # the Python load client instead of the compiled one
    encoding: str = "msgpack"  # Sinal's subprotocol for the compiled client (or "json")
    handshakes: int = 0  # in flight over all client processes; 0: 128 per 2,500 connections
    workers: int = 1  # Sinal's `serve --workers N`; the peer is always one process


def _server(stack: str, db: BenchDatabase, wd: Path, cpus: CpuPlan, connections: int,
            workers: int) -> ServerProcess:
    if stack == "sinal":
        return start_workers(sinal_server(db, wd, cpus=cpus.server, settings={
            # per worker: each above the whole storm (the kernel spreads it)
            "MAX_CONCURRENT_CONNECTIONS": str(connections + 1000),
            # every client comes from a handful of loopback addresses
            "WEBSOCKET_PRELOGIN_PER_ADDRESS": str(connections + 1000),
            "WEBSOCKET_LOGIN_TIMEOUT": "60000",
        }), workers, timeout=120)
    return socketio_server(db, wd, cpus=cpus.server).start(timeout=120)


def _plan_cpus(options: StormOptions) -> CpuPlan:
    """Server on the first CPU, load on the others; nothing pinned for workers."""
    return CpuPlan.for_machine(options.pin and options.workers <= 1)


def _client_fields(clients: Clients, options: StormOptions) -> dict[str, Any]:
    return {"client": "python" if options.python_client else "compiled",
            "clientProcesses": len(clients.procs),
            "handshakesInFlight": clients.plan.handshake_window * len(clients.procs)}


def bench_users(db: BenchDatabase, count: int) -> list[str]:
    """`count` requesters (bench_users: n -> id, for the writer) and a token for each."""
    from sinal.domain.tokens import mint_token

    rows = db.execute(
        "WITH made AS (INSERT INTO users (email, name, role, department_id) "
        "SELECT 'storm' || g || '@bench.sinal', 'Storm ' || g, 'requester', %s "
        "FROM generate_series(1, %s) AS g RETURNING id) SELECT id::text FROM made",
        (db.department_id, count))
    ids = [r[0] for r in rows]
    db.execute("CREATE TABLE IF NOT EXISTS bench_users (n INT PRIMARY KEY, id UUID NOT NULL)")
    db.execute("TRUNCATE bench_users")
    db.execute("INSERT INTO bench_users (n, id) SELECT ordinality - 1, id::uuid "
               "FROM unnest(%s::text[]) WITH ORDINALITY AS u(id)", (ids,))
    db.execute("CREATE SEQUENCE IF NOT EXISTS bench_user_turn")
    return [mint_token(JWT_SECRET, uid, "requester", ttl_seconds=4 * 3600) for uid in ids]


def notify_storm(stack: str, db: BenchDatabase, wd: Path, cpus: CpuPlan, tokens: list[str],
                 options: StormOptions, log: Any) -> dict[str, Any]:
    workers = options.workers if stack == "sinal" else 1
    server = _server(stack, db, wd, cpus, len(tokens), workers)
    result: dict[str, Any] = {"stack": stack, "users": len(tokens), "workers": workers}
    too_many = does_not_fit(len(tokens), workers)
    if too_many:
        result["fdLimit"] = too_many
        log(f"  {stack:5s} {too_many}")
    try:
        assert server.meter is not None
        plan = ClientPlan("sinal" if stack == "sinal" else "socketio", server.ws_port,
                          len(tokens), tokens[0], (NOTIFY_TOPIC,), tokens=tuple(tokens),
                          heartbeat_interval=20.0, cpus=cpus.load, phase="N")
        with clients_for(plan, options) as clients:
            ready = clients.wait_ready(timeout=600)
            result.update(_client_fields(clients, options))
            result["connected"] = ready["ready"]
            result["connectSeconds"] = ready["seconds"]
            result["clientCpuSecondsConnect"] = _client_cpu(clients)
            log(f"  {stack:5s} notify: {ready['ready']} users connected in "
                f"{ready['seconds']:.1f} s")
            commits = int(options.notify_rate * options.notify_seconds)
            writer = Writer(WritePlan(db.url, options.notify_rate, commits, cpus.load,
                                      phase="N", sql=NOTIFY_SQL, args=(len(tokens),)))
            try:
                clients.stats(reset=True, phase="N")
                server.meter.mark()
                writer.start()
                written = writer.result()
                deadline = time.monotonic() + options.drain_timeout
                while clients.frames() < written["commits"] and time.monotonic() < deadline:
                    time.sleep(0.2)
                window = server.meter.window()
                stats = clients.stats(reset=True)
            finally:
                writer.close()
        result.update({
            "commits": written["commits"], "commitRate": written["rate"],
            "frames": stats["frames"],
            "delivered": round(stats["frames"] / max(1, written["commits"]), 4),
            "latencyMs": stats["latencyMs"], "serverCpuPercent": window["cpuPercent"],
            "serverRssMb": window["rssMb"], "clientCpuPercent": round(
                100 * stats["cpuSeconds"] / max(1e-9, window["wallSeconds"]), 1),
            "staleFrames": stats["staleFrames"], "closes": stats["closes"],
        })
        lat = result["latencyMs"]
        log(f"  {stack:5s} notify: {written['commits']} notifications at "
            f"{written['rate']}/s to distinct users of {len(tokens)}: p50 {lat['p50']} ms, "
            f"p99 {lat['p99']} ms, {100 * result['delivered']:.1f}% delivered, server CPU "
            f"{window['cpuPercent']}%, client CPU {result['clientCpuPercent']}%")
    finally:
        server.stop()
    return result


def connect_storm(stack: str, n: int, db: BenchDatabase, wd: Path, cpus: CpuPlan,
                  options: StormOptions, log: Any) -> dict[str, Any]:
    workers = options.workers if stack == "sinal" else 1
    server = _server(stack, db, wd, cpus, n, workers)
    result: dict[str, Any] = {"stack": stack, "connections": n, "workers": workers}
    too_many = does_not_fit(n, workers)
    if too_many:
        result["fdLimit"] = too_many
        log(f"  {stack:5s} {too_many}")
    try:
        assert server.meter is not None
        token = db.token()
        server.meter.mark()
        plan = ClientPlan("sinal" if stack == "sinal" else "socketio", server.ws_port, n,
                          token, (NOTIFY_TOPIC,), heartbeat_interval=20.0, cpus=cpus.load)
        t0 = time.perf_counter()
        profiled = stack == "sinal" and options.profile_seconds > 0 \
            and n == options.connects[0]
        with clients_for(plan, options) as clients:
            if profiled:
                with Profile(first_worker(server, workers), options.profile_seconds,
                             wd / "profile-connect.txt") as spy:
                    ready = clients.wait_ready(timeout=900)
                result["profile"] = spy.summary
                log(f"  sinal connect profile: {top_line(spy.summary, 4)}")
            else:
                ready = clients.wait_ready(timeout=900)
            window = server.meter.window()
            client_cpu = _client_cpu(clients)
            result.update({
                "ready": ready["ready"], "failed": ready["failed"],
                "seconds": ready["seconds"], "wallSeconds": round(time.perf_counter() - t0, 2),
                "connectMs": ready["connectMs"], "serverCpuPercent": window["cpuPercent"],
                "serverCpuSeconds": window["cpuSeconds"], "serverRssMb": window["rssMb"],
                "clientCpuSeconds": client_cpu,
                "sourceAddresses": ready.get("sourceAddresses"),
                "highestSourceAddress": ready.get("highestSourceAddress"),
                "addressRetries": ready.get("addressRetries"),
                **_client_fields(clients, options),
            })
            if stack == "sinal" and workers > 1:
                result["byWorker"] = census(server, token, workers)
                log(f"  sinal {census_line(result['byWorker'])}")
        log(f"  {stack:5s} connect {n}: {ready['ready']} subscribed in {ready['seconds']:.1f} s, "
            f"p99 {ready['connectMs']['p99']} ms, server CPU {window['cpuSeconds']} s, client "
            f"CPU {client_cpu} s ({result['clientProcesses']} process(es), "
            f"{result['handshakesInFlight']} handshakes in flight)"
            + (f", failed {ready['failed']}" if ready["failed"] else ""))
    finally:
        server.stop()
    return result


def run_notify(db: BenchDatabase, wd: Path, options: StormOptions, log: Any) -> dict[str, Any]:
    cpus = _plan_cpus(options)
    out: dict[str, Any] = {"options": options.__dict__.copy(), "cpuPlan": cpus.describe(),
                           "runs": []}
    tokens = bench_users(db, options.users)
    for stack in available_stacks(options.stacks, out):
        try:
            out["runs"].append(notify_storm(stack, db, wd, cpus, tokens, options, log))
        except Exception as exc:  # keep the other stack's numbers
            out["runs"].append({"stack": stack, "error": repr(exc)})
            log(f"  {stack} notify: FAILED {exc!r}")
    return out


def run_connect(db: BenchDatabase, wd: Path, options: StormOptions, log: Any) -> dict[str, Any]:
    cpus = _plan_cpus(options)
    out: dict[str, Any] = {"options": options.__dict__.copy(), "cpuPlan": cpus.describe(),
                           "runs": []}
    stacks = available_stacks(options.stacks, out)
    for n in options.connects:
        for stack in stacks:
            try:
                out["runs"].append(connect_storm(stack, n, db, wd, cpus, options, log))
            except Exception as exc:
                out["runs"].append({"stack": stack, "connections": n, "error": repr(exc)})
                log(f"  {stack} connect {n}: FAILED {exc!r}")
    return out
