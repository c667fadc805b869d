"""bench/scenario: the seed's load test (section 9.1), scaled to this machine, against
the seed's PerformanceTargets (section 9.2).

The seed (Artillery): phases warm-up 60 s at 10 arrivals/s, load 300 s at 50/s, stress
120 s at 100/s; 70 % of arrivals are WebSocket users (subscribe to
purchase_request_changed and quotation_changed, think 30 s, heartbeat, think 60 s), 30 %
are REST users (GET /api/purchase-requests with If-None-Match, think 5 s).

Here: the same arrival rates, every duration and think time multiplied by `time_scale`
(1/8 by default: 7.5 s + 37.5 s + 15 s; a WebSocket user lives 11.25 s and sends a
heartbeat every 3.75 s). A REST user polls `rest_polls` times: the first GET captures the
ETag, the next ones send If-None-Match (one GET per user, as the seed's flow literally
reads, would never send a valid ETag). A writer adds quotations at `write_rate`/s for the
whole run, so WebSocket users receive data_update frames whose latency is measured; it
never touches purchase requests, so their ETags stay valid (a 304 is a cache hit).

Errors: failed WebSocket handshakes, connections the server closed, failed or 5xx/429
REST requests, over all operations.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing as mp
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from bench.harness import BenchDatabase, CpuPlan, ServerProcess, pin_self, sinal_server
from bench.loadclient import ClientPlan, LoadClients, histogram_percentiles, percentiles
from bench.rest import NOT_AVAILABLE, PATH, seed_purchase_requests, wire_get
from bench.writer import WritePlan, Writer

SEED_PHASES = (("warm-up", 60.0, 10.0), ("load", 300.0, 50.0), ("stress", 120.0, 100.0))
WS_TOPICS = ("purchase_request_changed", "quotation_changed")
QUOTATION_SQL = ("INSERT INTO quotations (notes, purchase_request_id, supplier_id, amount) "
                 "VALUES (%s, %s, %s, 990)")


@dataclass
class ScenarioOptions:
    time_scale: float = 1 / 8
    ws_share: float = 0.7
    ws_think_seconds: tuple[float, float] = (30.0, 60.0)  # seed: think 30, heartbeat, think 60
    rest_think_seconds: float = 5.0
    rest_polls: int = 3
    write_rate: float = 5.0
    rest_threads: int = 48
    phases: list[tuple[str, float, float]] = field(default_factory=lambda: list(SEED_PHASES))
    pin: bool = True


# --------------------------------------------------------------------------- REST users


@dataclass(frozen=True, slots=True)
class RestUsersPlan:
    port: int
    token: str
    rate: float  # arrivals per second
    seconds: float
    polls: int
    think: float
    threads: int
    cpus: frozenset[int] = frozenset()


def _rest_user(plan: RestUsersPlan, record: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", plan.port, timeout=10)
    etag = ""
    try:
        for poll in range(plan.polls):
            if poll:
                time.sleep(plan.think)
            headers = {"Authorization": f"Bearer {plan.token}", "Accept-Encoding": "gzip"}
            if etag:
                headers["If-None-Match"] = etag
            t0 = time.perf_counter()
            try:
                conn.request("GET", PATH, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
                etag = response.getheader("ETag") or etag
            except (OSError, http.client.HTTPException) as exc:
                record(time.perf_counter() - t0, f"error {type(exc).__name__}", 0, bool(etag))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", plan.port, timeout=10)
                continue
            record(time.perf_counter() - t0, status, len(body), "If-None-Match" in headers)
    finally:
        conn.close()


def rest_users_main(plan: RestUsersPlan, pipe: Pipe) -> None:
    pin_self(plan.cpus)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    conditional = Counter[str]()
    body_bytes = [0]

    def record(seconds: float, status: int | str, size: int, was_conditional: bool) -> None:
        with lock:
            latencies.append(seconds * 1000)
            statuses[str(status)] += 1
            body_bytes[0] += size
            if was_conditional:
                conditional[str(status)] += 1

    users = max(1, round(plan.rate * plan.seconds))
    t0 = time.monotonic()
    with ThreadPoolExecutor(plan.threads) as pool:
        for i in range(users):
            delay = t0 + i / plan.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(_rest_user, plan, record)
    pipe.send({"users": users, "latencyMs": percentiles(latencies), "statuses": dict(statuses),
               "conditional": dict(conditional), "bodyBytes": body_bytes[0]})


class RestUsers:
    def __init__(self, plan: RestUsersPlan) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=rest_users_main, args=(plan, child), daemon=True)
        self.proc.start()

    def result(self, timeout: float) -> dict[str, Any]:
        if not self.pipe.poll(timeout):
            self.proc.kill()
            return {"error": "REST users did not finish"}
        result: dict[str, Any] = self.pipe.recv()
        self.proc.join(5)
        return result


# --------------------------------------------------------------------------- the run


def _connections_now(server: ServerProcess) -> int | None:
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{server.http_port}/health/realtime", timeout=2) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:  # 503 when unhealthy: still the numbers
        body = json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return None
    value = body.get("websocketConnections")
    return int(value) if isinstance(value, int) else None


def _prepare(db: BenchDatabase) -> tuple[str, str]:
    if not db.execute("SELECT 1 FROM purchase_requests LIMIT 1"):
        seed_purchase_requests(db, 200)
    pr = db.execute("SELECT id::text FROM purchase_requests ORDER BY created_at LIMIT 1")[0][0]
    supplier = db.execute("INSERT INTO suppliers (name) VALUES ('Fornecedor Bench') "
                          "RETURNING id::text")[0][0]
    return str(pr), str(supplier)


def run_scenario(db: BenchDatabase, wd: Path, options: ScenarioOptions,
                 log: Any) -> dict[str, Any]:
    cpus = CpuPlan.for_machine(options.pin)
    scale = options.time_scale
    pr_id, supplier_id = _prepare(db)
    token = db.token()
    server = sinal_server(db, wd, cpus=cpus.server).start()
    out: dict[str, Any] = {"options": {**options.__dict__, "phases": options.phases},
                           "cpuPlan": cpus.describe(), "phases": []}
    groups: list[LoadClients] = []
    rest_runs: list[tuple[str, RestUsers]] = []
    try:
        probe = wire_get(server.http_port, PATH, {"Authorization": f"Bearer {token}"})
        rest_available = probe.status != 404
        out["rest"] = "available" if rest_available else NOT_AVAILABLE
        total_seconds = sum(p[1] for p in options.phases) * scale
        lifetime = sum(options.ws_think_seconds) * scale
        writer = Writer(WritePlan(db.url, options.write_rate,
                                  max(1, int(options.write_rate * (total_seconds + lifetime))),
                                  cpus.load, phase="S", sql=QUOTATION_SQL,
                                  args=(pr_id, supplier_id)))
        assert server.meter is not None
        peak_connections = 0
        writer.start()
        run_meter_cpu0 = server.meter.cpu_seconds()
        run_t0 = time.perf_counter()
        for name, seed_seconds, rate in options.phases:
            seconds = seed_seconds * scale
            ws_rate = rate * options.ws_share
            ws_count = max(1, round(ws_rate * seconds))
            plan = ClientPlan("sinal", server.ws_port, ws_count, token, WS_TOPICS,
                              heartbeat_interval=options.ws_think_seconds[0] * scale,
                              cpus=cpus.load, connect_rate=ws_rate, lifetime=lifetime,
                              handshake_window=256, phase="S")
            server.meter.mark()
            groups.append(LoadClients(plan, max(1, math.ceil(ws_count / 2500))))
            if rest_available:
                rest_runs.append((name, RestUsers(RestUsersPlan(
                    server.http_port, token, rate * (1 - options.ws_share), seconds,
                    options.rest_polls, options.rest_think_seconds * scale,
                    options.rest_threads, cpus.load))))
            phase_end = time.monotonic() + seconds
            while time.monotonic() < phase_end:
                now = _connections_now(server)
                if now is not None:
                    peak_connections = max(peak_connections, now)
                time.sleep(min(1.0, max(0.0, phase_end - time.monotonic())))
            window = server.meter.window()
            out["phases"].append({"phase": name, "seconds": round(seconds, 2),
                                  "arrivalRate": rate, "wsUsers": ws_count,
                                  "serverCpuPercent": window["cpuPercent"],
                                  "serverPeakRssMb": window["peakRssMb"]})
            log(f"  scenario {name:8s}: {seconds:5.1f} s at {rate:.0f} arrivals/s, server CPU "
                f"{window['cpuPercent']}%, RSS {window['rssMb']} MB, "
                f"{peak_connections} connections at most so far")
        time.sleep(lifetime + 1.0)  # the last users finish their flow
        run_seconds = time.perf_counter() - run_t0
        run_cpu = server.meter.cpu_seconds() - run_meter_cpu0
        written = writer.result(timeout=60)
        writer.close()
        ws_stats = [g.stats() for g in groups]
        rest_results = [(name, users.result(timeout=60)) for name, users in rest_runs]
        out.update(summarise(out, ws_stats, rest_results, written, peak_connections,
                             server, run_cpu, run_seconds, rest_available))
        lat = out["dataUpdateLatencyMs"]
        log(f"  scenario: {out['wsAttempts']} WebSocket users ({out['wsFailed']} failed, "
            f"{out['wsClosedByServer']} closed by the server), {out['dataUpdates']} "
            f"data_updates p95 {lat['p95']} ms, {out['restRequests']} REST requests (p95 "
            f"{out['restP95Ms']} ms), cache hit rate {out['cacheHitRate']}, error rate "
            f"{out['errorRate']}, peak {out['peakConnections']} connections")
    finally:
        for group in groups:
            group.close()
        server.stop()
    return out


def summarise(out: dict[str, Any], ws_stats: list[dict[str, Any]],
              rest_results: list[tuple[str, dict[str, Any]]], written: dict[str, Any],
              peak_connections: int, server: ServerProcess, run_cpu: float,
              run_seconds: float, rest_available: bool) -> dict[str, Any]:
    hist: Counter[int] = Counter()
    max_latency = 0.0
    for phase, stats in zip(out["phases"], ws_stats, strict=True):
        phase["wsConnectMs"] = stats["connectMs"]
        phase["wsFailed"] = stats["failed"]
        phase["wsServerCloses"] = stats["closes"]
        hist.update(stats["hist"])
        max_latency = max(max_latency, stats["maxLatency"])
    by_phase = dict(rest_results)
    for phase in out["phases"]:
        rest = by_phase.get(phase["phase"])
        if rest is not None:
            phase["rest"] = rest
    ws_attempts = sum(s["opened"] for s in ws_stats)
    ws_failed = sum(sum(s["failed"].values()) for s in ws_stats)
    ws_closed = sum(sum(s["closes"].values()) for s in ws_stats)
    rest_requests = sum(sum(r.get("statuses", {}).values()) for _, r in rest_results)
    rest_errors = sum(count for _, r in rest_results for status, count
                      in r.get("statuses", {}).items()
                      if not status.isdigit() or int(status) >= 500 or int(status) == 429)
    conditional = Counter[str]()
    for _, r in rest_results:
        conditional.update(r.get("conditional", {}))
    conditional_total = sum(conditional.values())
    operations = ws_attempts + rest_requests
    rest_p95 = max((r["latencyMs"]["p95"] or 0.0 for _, r in rest_results
                    if "latencyMs" in r), default=None)
    ws_connect_p95 = max((s["connectMs"]["p95"] or 0.0 for s in ws_stats), default=None)
    assert server.meter is not None
    summary = {
        "wsAttempts": ws_attempts, "wsFailed": ws_failed, "wsClosedByServer": ws_closed,
        "wsCompleted": sum(s["completed"] for s in ws_stats),
        "dataUpdates": sum(s["frames"] for s in ws_stats),
        "dataUpdateLatencyMs": histogram_percentiles(hist, max_latency),
        "writer": written,
        "restRequests": rest_requests, "restErrors": rest_errors,
        "cacheHitRate": round(conditional.get("304", 0) / conditional_total, 4)
        if conditional_total else None,
        "errorRate": round((ws_failed + ws_closed + rest_errors) / operations, 5)
        if operations else None,
        "peakConnections": peak_connections,
        "serverPeakRssMb": round(max(p["serverPeakRssMb"] for p in out["phases"]), 1),
        "serverCpuPercentRun": round(100 * run_cpu / run_seconds, 1),
        "serverCpuPercentMax": max(p["serverCpuPercent"] for p in out["phases"]),
        "restP95Ms": rest_p95 if rest_available else None,
        "wsSubscribeP95Ms": ws_connect_p95,
    }
    return summary

