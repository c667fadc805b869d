"""bench/workers: REST 304 throughput of `sinal serve --workers 1` against `--workers 2`
on this machine, in the same run (issue #11 asks for at least 1.5x with 2 workers).

    .venv/bin/python -m bench.workers [--seconds 8] [--connections 64] [--threads 2]

Each server gets a fresh bench database with `--requests` purchase requests; wrk sends
`GET /api/purchase-requests` with the bench admin's token and If-None-Match: <the list's
ETag>, so every answer is a 304 from memory. Nothing is pinned: the workers need the
cores, and wrk shares them (on a 2-core machine wrk takes a good part of one), so the
ratio measured here is a floor of what two cores give. The result is printed as JSON and
written to bench/results/workers-<utc>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
from pathlib import Path
from typing import Any

from bench.harness import BenchDatabase, CpuPlan, machine_info, sinal_server, workdir
from bench.rest import PATH, RestOptions, _run_wrk, seed_purchase_requests, wire_get

RESULTS = Path(__file__).parent / "results"


def measure_workers(count: int, options: RestOptions, requests: int) -> dict[str, Any]:
    with BenchDatabase() as db, workdir() as wd:
        seed_purchase_requests(db, requests)
        server = sinal_server(db, wd)
        server.argv = [*server.argv, "--workers", str(count)]
        with server:
            auth = {"Authorization": f"Bearer {db.token()}"}
            # every worker ready: ask until both answered (new connection each time)
            seen: set[str] = set()
            deadline = time.monotonic() + 60
            while len(seen) < count and time.monotonic() < deadline:
                try:
                    seen.add(server.get_json("/health/ready").get("node", ""))
                except urllib.error.HTTPError as exc:  # 503: that worker is still starting
                    if exc.code != 503:
                        raise
                    time.sleep(0.1)
            probe = wire_get(server.http_port, PATH, auth)
            assert probe.status == 200, probe.status
            etag = probe.headers["etag"]
            check = wire_get(server.http_port, PATH, {**auth, "If-None-Match": etag})
            assert check.status == 304, check.status
            result = _run_wrk(server.http_port, PATH, {**auth, "If-None-Match": etag},
                              options, CpuPlan(frozenset(), frozenset()), wd,
                              f"workers{count}")
            result["workersAnswering"] = sorted(seen)
            return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    options = RestOptions(wrk_seconds=args.seconds, wrk_connections=args.connections,
                          wrk_threads=args.threads, pin=False, profile=False)
    one = measure_workers(1, options, args.requests)
    two = measure_workers(2, options, args.requests)
    rps1, rps2 = one.get("requestsPerSecond", 0), two.get("requestsPerSecond", 0)
    ratio = round(rps2 / rps1, 2) if rps1 else None
    report: dict[str, Any] = {"machine": machine_info(), "cpus": os.cpu_count(),
                              "rest304": {"workers1": one, "workers2": two, "ratio": ratio}}
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"workers-{stamp}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"rest304_rps_1_worker": rps1, "rest304_rps_2_workers": rps2,
                      "ratio": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
