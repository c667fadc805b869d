"""bench/workers: `sinal serve --workers 1` against `--workers 2`, and one node direct
against two nodes behind nginx, on this machine, in the same run (issue #11).

    .venv/bin/python -m bench.workers                  # rest and fanout
    .venv/bin/python -m bench.workers rest [--seconds 8] [--connections 64] [--threads 2]
    .venv/bin/python -m bench.workers fanout [--clients 5000] [--rates 200,1000]
    .venv/bin/python -m bench.workers --no-nginx       # workers only
    .venv/bin/python -m bench.workers fanout --configs workers1,workers2

Three configurations, each on a fresh bench database:

* ``workers1``: `sinal serve --workers 1` (one process; also "one node direct");
* ``workers2``: `sinal serve --workers 2` (two worker processes on the same two ports,
  SO_REUSEPORT: the kernel spreads connections over them);
* ``nginx2``: two `sinal serve` nodes behind the real nginx with the repository's
  nginx.conf, rendered for local ports (sinal.node.localcluster.render_nginx_conf, the
  same rendering `make cluster` uses); every request and frame goes through nginx.

Parts:

* ``rest``: wrk sends `GET /api/purchase-requests` with the bench admin's token and
  If-None-Match: <the list's ETag>, so every answer is a 304 from memory (through nginx's
  HTTP port for ``nginx2``). req/s, latency, the nodes' CPU and nginx's CPU.
* ``fanout``: N compiled load clients (bench.loadgen) subscribed to one topic, then, for
  each rate of `rates`, the writer at that many commits/s for `paced_seconds` (at most
  `max_deliveries` frames) with bench.fanout.run_phase: frames delivered/s,
  commit-to-client latency, client CPU, PostgreSQL backends' CPU. N=5,000 at 200
  commits/s offers 1,000,000 frames/s (the issue's point), at 1,000 commits/s 5,000,000.
  Server CPU is summed over the node processes (a worker's CPU counts for its parent:
  bench.harness.ProcessMeter); server us per delivered frame = that CPU / frames
  delivered; nginx's CPU (master and workers) is reported apart and, for ``nginx2``,
  also added in a second per-frame figure.

Nothing is pinned: the workers need both cores, and the load generator (wrk or the load
client), the writer, PostgreSQL and nginx share the same two cores with them. On a
2-core machine the ratios are therefore a floor of what two cores give a server alone.
Ratios are against ``workers1`` of the same run. Results go to
bench/results/workers-<utc>.json and .md (bench/report_workers.py writes the tables).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fanout import FanoutOptions, run_phase
from bench.harness import (
    BENCH_TOPIC,
    BenchDatabase,
    CpuPlan,
    OthersMeter,
    ProcessMeter,
    ServerProcess,
    free_port,
    raise_fd_limit,
    sinal_server,
    start_report,
    workdir,
    write_report,
)
from bench.loadclient import ClientPlan
from bench.loadgen import open_clients
from bench.report_workers import markdown
from bench.rest import PATH, RestOptions, _run_wrk, seed_purchase_requests, wire_get

RESULTS = Path(__file__).parent / "results"
CONFIGS = ("workers1", "workers2", "nginx2")
UNPINNED = CpuPlan(frozenset(), frozenset())
PLACEMENT = ("nothing pinned: the server's processes, the load generator (wrk or the "
             "compiled load client), the writer, PostgreSQL and nginx all share the "
             "machine's {cpus} cores as the kernel schedules them")


@dataclass
class WorkersOptions:
    parts: tuple[str, ...] = ("rest", "fanout")
    configs: tuple[str, ...] = CONFIGS
    wrk_seconds: float = 8.0
    wrk_connections: int = 64
    wrk_threads: int = 2
    requests: int = 200  # purchase requests in the list the 304 is about
    clients: int = 5000
    rates: tuple[float, ...] = (200.0, 1000.0)  # commits/s, one paced phase each
    paced_seconds: float = 4.0
    max_deliveries: int = 5_000_000  # frames asked of one phase at most (caps its commits)
    drain_timeout: float = 40.0


# --------------------------------------------------------------------------- meters


@dataclass
class GroupMeter:
    """ProcessMeters of several processes read as one: CPU and RSS summed over `counted`
    (the nodes); every part's own window is kept in `last` (nginx among them)."""

    parts: dict[str, ProcessMeter]
    counted: tuple[str, ...]
    last: dict[str, dict[str, float]] = field(default_factory=dict)

    def mark(self) -> None:
        for meter in self.parts.values():
            meter.mark()

    def window(self) -> dict[str, float]:
        self.last = {name: meter.window() for name, meter in self.parts.items()}
        mine = [self.last[name] for name in self.counted]
        wall = max(w["wallSeconds"] for w in mine)
        cpu = sum(w["cpuSeconds"] for w in mine)
        return {"cpuSeconds": round(cpu, 3), "cpuPercent": round(100 * cpu / wall, 1),
                "rssMb": round(sum(w["rssMb"] for w in mine), 1),
                "peakRssMb": round(sum(w["peakRssMb"] for w in mine), 1),
                "wallSeconds": wall}


@dataclass
class Target:
    """What a part talks to: the ports clients use and the meter of the processes behind
    them (what bench.fanout.run_phase reads as `server.meter`)."""

    name: str
    http_port: int
    ws_port: int
    meter: GroupMeter
    nodes: list[ServerProcess]


# --------------------------------------------------------------------------- servers


def wait_workers(server: ServerProcess, count: int, patience: float = 60.0) -> list[str]:
    """Until `count` distinct workers answered /health/ready (a new connection each time,
    so the kernel picks a worker each time); a starting worker answers 503."""
    seen: set[str] = set()
    deadline = time.monotonic() + patience
    while len(seen) < count and time.monotonic() < deadline:
        try:
            seen.add(server.get_json("/health/ready").get("node", ""))
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
            time.sleep(0.1)
    return sorted(seen)


@dataclass
class Nginx:
    port: int
    proc: subprocess.Popen[bytes]
    meter: ProcessMeter


@contextlib.contextmanager
def nginx_front(nodes: list[ServerProcess], wd: Path, patience: float = 30.0
                ) -> Iterator[Nginx]:
    """The real nginx with the repository's nginx.conf rendered for these nodes."""
    from sinal.node.localcluster import NGINX_CONF, nginx_binary, render_nginx_conf

    run_dir = wd / f"nginx-{os.getpid()}-{free_port()}"
    run_dir.mkdir()
    port = free_port()
    conf = run_dir / "nginx.conf"
    conf.write_text(render_nginx_conf(
        NGINX_CONF.read_text(), http_ports=[n.http_port for n in nodes],
        ws_ports=[n.ws_port for n in nodes], listen_port=port, run_dir=run_dir))
    with (run_dir / "stderr.log").open("wb") as errors:
        proc = subprocess.Popen([nginx_binary(), "-p", str(run_dir), "-c", str(conf), "-e",
                                 "stderr", "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                stderr=errors, start_new_session=True)
    meter: ProcessMeter | None = None
    try:
        deadline = time.monotonic() + patience
        while True:  # ready once a node answers through it
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}: "
                                   f"{(run_dir / 'stderr.log').read_text()[-800:]}")
            with contextlib.suppress(OSError):
                if wire_get(port, "/health/ready", {}, timeout=2).status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not answer /health/ready")
            time.sleep(0.1)
        meter = ProcessMeter(proc.pid)
        yield Nginx(port, proc, meter)
    finally:
        if meter is not None:
            meter.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def target(config: str, db: BenchDatabase, wd: Path) -> Iterator[Target]:
    """One configuration, started and ready; stopped on exit."""
    if config in ("workers1", "workers2"):
        count = 1 if config == "workers1" else 2
        server = sinal_server(db, wd)
        server.name = f"sinal-{config}"
        server.argv = [*server.argv, "--workers", str(count)]
        with server:
            answering = wait_workers(server, count)
            if len(answering) < count:
                raise RuntimeError(f"only {answering} of {count} workers answered")
            assert server.meter is not None
            yield Target(config, server.http_port, server.ws_port,
                         GroupMeter({"server": server.meter}, ("server",)), [server])
        return
    nodes = []
    with contextlib.ExitStack() as stack:
        for i in range(2):
            node = sinal_server(db, wd, settings={"TRUSTED_PROXIES": "127.0.0.1",
                                                  "SINAL_NODE_ID": f"bench-n{i}"})
            node.name = f"sinal-n{i}"
            nodes.append(stack.enter_context(node))
        front = stack.enter_context(nginx_front(nodes, wd))
        meters = {f"node{i}": n.meter for i, n in enumerate(nodes) if n.meter is not None}
        meters["nginx"] = front.meter
        yield Target(config, front.port, front.port,
                     GroupMeter(meters, tuple(k for k in meters if k != "nginx")), nodes)


# --------------------------------------------------------------------------- parts


def measure_rest(config: str, options: WorkersOptions, log: Any) -> dict[str, Any]:
    with BenchDatabase() as db, workdir() as wd:
        seed_purchase_requests(db, options.requests)
        with target(config, db, wd) as where:
            auth = {"Authorization": f"Bearer {db.token()}"}
            etags = {wire_get(n.http_port, PATH, auth).headers.get("etag") for n in where.nodes}
            probe = wire_get(where.http_port, PATH, auth)
            assert probe.status == 200, probe.status
            etag = probe.headers["etag"]
            if etags != {etag}:  # two nodes must answer 304 to the same ETag
                raise RuntimeError(f"{config}: the nodes give different ETags {etags}")
            conditional = {**auth, "If-None-Match": etag}
            for _ in range(4):  # through nginx: both nodes, in turn
                check = wire_get(where.http_port, PATH, conditional)
                assert check.status == 304, check.status
            rest = RestOptions(wrk_seconds=options.wrk_seconds,
                               wrk_connections=options.wrk_connections,
                               wrk_threads=options.wrk_threads, pin=False, profile=False)
            where.meter.mark()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            others = OthersMeter()
            others.mark()
            result = _run_wrk(where.http_port, PATH, conditional, rest, UNPINNED, wd,
                              f"rest-{config}")
            window = where.meter.window()
            result["otherCpuPercent"] = others.percent()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk: the child that ended
            wrk_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            result["wrkCpuPercent"] = round(100 * wrk_cpu / window["wallSeconds"], 1)
            result["serverCpuPercent"] = window["cpuPercent"]
            if "nginx" in where.meter.last:
                result["nginxCpuPercent"] = where.meter.last["nginx"]["cpuPercent"]
            requests = result.get("requests") or 0
            if requests:
                result["serverUsPerRequest"] = round(1e6 * window["cpuSeconds"] / requests, 1)
            log(f"  rest {config}: {result.get('requestsPerSecond')} req/s, p99 "
                f"{result.get('latencyMs', {}).get('p99')} ms, server CPU "
                f"{result['serverCpuPercent']}%, wrk CPU {result['wrkCpuPercent']}%, "
                f"others {result['otherCpuPercent']}%"
                + (f", nginx CPU {result['nginxCpuPercent']}%" if "nginxCpuPercent" in result
                   else "") + (f"; {result['error']}" if "error" in result else ""))
            return result


def fanout_phase(config: str, rate: float, ready: int, db: BenchDatabase, where: Target,
                 clients: Any, options: WorkersOptions) -> dict[str, Any]:
    """bench.fanout.run_phase at one rate, with the server's CPU per delivered frame."""
    fan = FanoutOptions(rate=rate, drain_timeout=options.drain_timeout, pin=False)
    commits = max(1, min(int(rate * options.paced_seconds), options.max_deliveries // ready))
    others = OthersMeter()
    others.mark()
    phase = run_phase(f"paced@{rate:g}", "sinal", ready, rate, commits, db,
                      where, clients, UNPINNED, fan)  # type: ignore[arg-type]
    phase["otherCpuPercent"] = others.percent()
    windows = where.meter.last
    nodes_cpu = sum(windows[k]["cpuSeconds"] for k in where.meter.counted)
    frames = phase["frames"] or 0
    phase.update({
        "config": config, "offeredFramesPerSecond": round(rate * ready),
        "serverCpuSeconds": round(nodes_cpu, 3),
        "serverUsPerFrame": round(1e6 * nodes_cpu / frames, 3) if frames else None,
        "cpuByProcess": windows,
    })
    if "nginx" in windows:
        nginx_cpu = windows["nginx"]["cpuSeconds"]
        phase["nginxCpuPercent"] = windows["nginx"]["cpuPercent"]
        phase["nginxCpuSeconds"] = nginx_cpu
        phase["serverAndNginxUsPerFrame"] = (round(1e6 * (nodes_cpu + nginx_cpu) / frames, 3)
                                             if frames else None)
    return phase


def measure_fanout(config: str, options: WorkersOptions, log: Any) -> dict[str, Any]:
    """N clients on one configuration, then a paced phase at each rate."""
    with BenchDatabase() as db, workdir() as wd, target(config, db, wd) as where:
        plan = ClientPlan("sinal", where.ws_port, options.clients, db.token(),
                          (BENCH_TOPIC,), heartbeat_interval=20.0)
        with open_clients(plan, encoding="msgpack") as clients:
            connected = clients.wait_ready()
            ready = connected["ready"]
            if not ready:
                raise RuntimeError(f"{config}: no client connected ({connected['failed']})")
            result: dict[str, Any] = {"config": config, "connected": ready,
                                      "connectSeconds": connected["seconds"],
                                      "connectFailed": connected["failed"], "phases": {}}
            for rate in options.rates:
                phase = fanout_phase(config, rate, ready, db, where, clients, options)
                result["phases"][f"{rate:g}"] = phase
                lat = phase["latencyMs"]
                log(f"  fanout {config} at {rate:g}/s: {ready} clients, {phase['commits']} "
                    f"commits at {phase['commitRate']}/s -> {phase['framesPerSecond']:,} "
                    f"frames/s ({100 * (phase['delivered'] or 0):.1f}% delivered), p50 "
                    f"{lat['p50']} ms p99 {lat['p99']} ms; server CPU "
                    f"{phase['serverCpuPercent']}% ({phase['serverUsPerFrame']} us/frame); "
                    f"client CPU {phase['clientCpuPercent']}%, others "
                    f"{phase['otherCpuPercent']}%"
                    + (f"; nginx CPU {phase['nginxCpuPercent']}%" if "nginxCpuPercent" in phase
                       else ""))
            return result


def ratios(by_config: dict[str, dict[str, Any]], keys: dict[str, str]) -> dict[str, Any]:
    """Each configuration against workers1 for every key (a dotted path into the result)."""
    def value(result: dict[str, Any], path: str) -> float | None:
        node: Any = result
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return float(node) if isinstance(node, int | float) else None

    base = by_config.get("workers1", {})
    out: dict[str, Any] = {}
    for config, result in by_config.items():
        if config == "workers1":
            continue
        row = {}
        for name, path in keys.items():
            mine, theirs = value(result, path), value(base, path)
            row[name] = round(mine / theirs, 2) if mine is not None and theirs else None
        out[config] = row
    return out


def run_workers(options: WorkersOptions, log: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"options": options.__dict__.copy(),
                              "placement": PLACEMENT.format(cpus=os.cpu_count())}
    if "rest" in options.parts:
        rest: dict[str, Any] = {}
        for config in options.configs:
            try:
                rest[config] = measure_rest(config, options, log)
            except Exception as exc:  # one broken configuration must not lose the others
                rest[config] = {"error": repr(exc)}
                log(f"  rest {config}: FAILED {exc!r}")
        report["rest304"] = {"runs": rest, "ratios": ratios(rest, {
            "requestsPerSecond": "requestsPerSecond", "p99": "latencyMs.p99"})}
    if "fanout" in options.parts:
        fan: dict[str, Any] = {}
        for config in options.configs:
            try:
                fan[config] = measure_fanout(config, options, log)
            except Exception as exc:
                fan[config] = {"error": repr(exc), "phases": {}}
                log(f"  fanout {config}: FAILED {exc!r}")
        report["fanout"] = {"runs": fan, "ratios": {
            f"{rate:g}": ratios({c: r["phases"].get(f"{rate:g}", {}) for c, r in fan.items()},
                                {"framesPerSecond": "framesPerSecond", "p99": "latencyMs.p99",
                                 "serverUsPerFrame": "serverUsPerFrame"})
            for rate in options.rates}}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", metavar="part", help="rest, fanout (default both)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, any of {', '.join(CONFIGS)}")
    parser.add_argument("--no-nginx", action="store_true",
                        help="only workers1 and workers2 (no two nodes behind nginx)")
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk seconds per config")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=5000, help="fan-out subscribers")
    parser.add_argument("--rates", default="200,1000",
                        help="fan-out commits/s, one paced phase each (comma-separated)")
    parser.add_argument("--paced-seconds", type=float, default=4.0,
                        help="seconds of writes per rate (capped by --max-deliveries)")
    parser.add_argument("--max-deliveries", type=int, default=5_000_000,
                        help="frames asked of one phase at most")
    args = parser.parse_args(argv)
    parts = tuple(args.parts) or ("rest", "fanout")
    unknown = [p for p in parts if p not in ("rest", "fanout")]
    if unknown:
        parser.error(f"unknown part {unknown[0]!r}: choose from rest, fanout")
    configs = tuple(c for c in args.configs.split(",") if c and not (args.no_nginx
                                                                   and c == "nginx2"))
    if not configs or any(c not in CONFIGS for c in configs):
        parser.error(f"--configs: choose from {', '.join(CONFIGS)}")
    options = WorkersOptions(parts=parts, configs=configs,
                             wrk_seconds=args.seconds, wrk_connections=args.connections,
                             wrk_threads=args.threads, requests=args.requests,
                             clients=args.clients,
                             rates=tuple(float(r) for r in args.rates.split(",") if r),
                             paced_seconds=args.paced_seconds,
                             max_deliveries=args.max_deliveries)
    raise_fd_limit(262144)
    t0 = time.monotonic()
    log, results = start_report("bench.workers", argv)
    stamp = results["stamp"]
    log(f"{results['machine']['cpus']} CPUs, load {results['machine']['loadAverage']}, other "
        f"processes {results['backgroundCpuPercent']}% CPU; parts {', '.join(parts)}; "
        f"configs {', '.join(options.configs)}")
    results.update(run_workers(options, log))
    results["seconds"] = round(time.monotonic() - t0, 1)
    write_report(RESULTS, f"workers-{stamp}", results, markdown(results), log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
