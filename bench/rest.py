"""bench/rest: GET /api/purchase-requests under wrk -- a full list, a 304 and a delta --
and the bytes a polling client spends per hour, full responses against ETag + delta + gzip.

Detection first: when the endpoint answers 404 (the REST front end is not in this build)
the part reports "REST not available in this build" instead of numbers.

Requests (Bearer JWT of the bench admin; RATE_LIMIT_REQUESTS_PER_MINUTE raised to its
maximum so the limiter is not what is measured):

* full:  GET /api/purchase-requests, Accept-Encoding: gzip
* 304:   the same with If-None-Match: <the ETag of the full response>
* delta: GET /api/purchase-requests?since=<offset before the last `delta_changes` changes>,
         Accept-Encoding: gzip

wrk (Debian's package) runs on the load CPU with a Lua script that sets the headers and
prints a JSON summary. Polling traffic per hour: a client polls every `poll_seconds`
(the seed's think time, 5 s), i.e. 720 polls an hour, while the list changes
`changes_per_hour` times; full polling downloads the whole list (all pages, identity
encoding) every time; smart polling sends If-None-Match and `since`, and gets a 304, or a
gzip'd delta when something changed. Bytes are counted on the wire (request and response,
headers included).
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.harness import BenchDatabase, CpuPlan, ServerProcess, sinal_server
from bench.profile import Profile, top_line

PATH = "/api/purchase-requests"
NOT_AVAILABLE = "REST not available in this build"

WRK_SCRIPT = """
wrk.method = "GET"
wrk.path = %(path)s
wrk.headers["Authorization"] = %(authorization)s
%(extra)s
done = function(summary, latency, requests)
  local out = string.format(
    '{"requests": %%d, "durationUs": %%d, "bytes": %%d, "connectErrors": %%d, ' ..
    '"readErrors": %%d, "writeErrors": %%d, "statusErrors": %%d, "timeouts": %%d, ' ..
    '"p50Us": %%d, "p90Us": %%d, "p99Us": %%d, "maxUs": %%d, "meanUs": %%f}',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean)
  io.write("WRK_JSON " .. out .. "\\n")
end
"""


@dataclass
class RestOptions:
    seed_requests: int = 200
    delta_changes: int = 5
    wrk_seconds: float = 5.0
    wrk_connections: int = 32
    wrk_threads: int = 1
    poll_seconds: float = 5.0
    changes_per_hour: int = 60
    pin: bool = True
    url: str = ""  # an already running server (skips starting Sinal); for trying the part
    profile: bool = True  # py-spy on the server during the full-list and 304 runs


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str]
    body: bytes  # decoded (gunzipped when the response was gzip'd)
    request_bytes: int
    response_bytes: int  # on the wire: status line, headers, body as sent


def wire_get(port: int, target: str, headers: dict[str, str], timeout: float = 10.0
             ) -> WireResponse:
    """One HTTP/1.1 GET on a fresh connection, counting every byte both ways."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        raw = b""
        while not _complete(raw):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    status = int(head_lines[0].split()[1])
    parsed = {}
    for line in head_lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    if parsed.get("content-encoding", "").lower() == "gzip" and body:
        body = gzip.decompress(body)
    return WireResponse(status, parsed, body, len(request), len(raw))


def _complete(raw: bytes) -> bool:
    """A whole response: headers, then Content-Length bytes or the last chunk (or none)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    lower = head.lower()
    status = int(head.split(b" ", 2)[1])
    if status in (204, 304) or 100 <= status < 200:
        return True
    for line in lower.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            return len(body) >= int(value.strip())
    if b"transfer-encoding: chunked" in lower:
        return body.endswith(b"0\r\n\r\n")
    return False  # until the server closes


def _unchunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while pos < len(data):
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end].split(b";")[0], 16)
        if size == 0:
            break
        out += data[line_end + 2:line_end + 2 + size]
        pos = line_end + 2 + size + 2
    return bytes(out)


def _json(response: WireResponse) -> Any:
    try:
        return json.loads(response.body or b"null")
    except ValueError:
        return None


def response_offset(response: WireResponse) -> int | None:
    body = _json(response)
    if isinstance(body, dict):
        for key in ("offset", "position", "lastOffset"):
            if isinstance(body.get(key), int):
                return int(body[key])
    for key in ("x-sinal-offset", "x-offset"):
        if response.headers.get(key, "").isdigit():
            return int(response.headers[key])
    return None


def next_page(response: WireResponse) -> str | None:
    """The cursor of the next page, under any of the usual names (None: last page)."""
    body = _json(response)
    if not isinstance(body, dict):
        return None
    for key in ("nextCursor", "next_cursor", "cursor", "next"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    page = body.get("page") or body.get("pagination")
    if isinstance(page, dict):
        for key in ("nextCursor", "next_cursor", "next"):
            value = page.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def seed_purchase_requests(db: BenchDatabase, count: int) -> None:
    items = json.dumps([
        {"sku": "PAP-A4-500", "description": "Papel A4 75 g, resma com 500 folhas",
         "quantity": 40, "unitPrice": 27.9},
        {"sku": "TON-HP-85A", "description": "Toner HP 85A preto", "quantity": 6,
         "unitPrice": 389.0},
        {"sku": "CAN-AZ-50", "description": "Caneta esferográfica azul, caixa com 50",
         "quantity": 4, "unitPrice": 42.5},
    ])
    db.execute(
        "INSERT INTO purchase_requests (title, description, requester_id, department_id, "
        "amount, items, status, needed_by) "
        "SELECT 'Compra de material de escritório #' || g, "
        "'Reposição trimestral do estoque do departamento, conforme orçamento aprovado.', "
        "%s, %s, 1000 + g * 13.37, %s::jsonb, "
        "(ARRAY['draft','pending_a1','pending_a2','pending_a3','approved'])[1 + g %% 5], "
        "current_date + (g %% 30) FROM generate_series(1, %s) AS g",
        (db.admin_id, db.department_id, items, count))


def change_purchase_requests(db: BenchDatabase, count: int) -> None:
    for _ in range(count):
        db.execute(
            "UPDATE purchase_requests SET description = 'Atualizado em ' || clock_timestamp() "
            "WHERE id = (SELECT id FROM purchase_requests ORDER BY random() LIMIT 1)")


def run_wrk(port: int, target: str, headers: dict[str, str], options: RestOptions,
            cpus: CpuPlan, workdir: Path, name: str, profile_pid: int = 0) -> dict[str, Any]:
    """wrk on one request; with `profile_pid`, py-spy records that process meanwhile."""
    if not profile_pid:
        return _run_wrk(port, target, headers, options, cpus, workdir, name)
    with Profile(profile_pid, options.wrk_seconds - 1, workdir / f"profile-{name}.txt") as spy:
        result = _run_wrk(port, target, headers, options, cpus, workdir, name)
    result["profile"] = spy.summary
    return result


def _run_wrk(port: int, target: str, headers: dict[str, str], options: RestOptions,
             cpus: CpuPlan, workdir: Path, name: str) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"error": "wrk is not installed (apt-get install wrk)"}
    extra = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
                      for k, v in headers.items() if k != "Authorization")
    script = workdir / f"wrk-{name}.lua"
    script.write_text(WRK_SCRIPT % {"path": json.dumps(target),
                                    "authorization": json.dumps(headers["Authorization"]),
                                    "extra": extra})
    command = [wrk, "-t", str(options.wrk_threads), "-c", str(options.wrk_connections),
               "-d", f"{max(1, round(options.wrk_seconds))}s", "--timeout", "5s",
               "-s", str(script),
               f"http://127.0.0.1:{port}"]
    if cpus.load:
        command = ["taskset", "-c", ",".join(map(str, sorted(cpus.load))), *command]
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=options.wrk_seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            raw = json.loads(line[len("WRK_JSON "):])
            seconds = raw["durationUs"] / 1e6
            errors = sum(raw[k] for k in ("connectErrors", "readErrors", "writeErrors",
                                          "statusErrors", "timeouts"))
            return {
                "requestsPerSecond": round(raw["requests"] / seconds) if seconds else 0,
                "requests": raw["requests"], "errors": errors,
                "statusErrors": raw["statusErrors"],
                "latencyMs": {"p50": raw["p50Us"] / 1000, "p90": raw["p90Us"] / 1000,
                              "p99": raw["p99Us"] / 1000, "max": raw["maxUs"] / 1000},
                "bytesPerRequest": round(raw["bytes"] / raw["requests"]) if raw["requests"]
                else 0,
                "connections": options.wrk_connections, "seconds": options.wrk_seconds,
            }
    return {"error": f"wrk said: {done.stdout[-400:]} {done.stderr[-400:]}"}


def polling_bytes(full_pages: list[WireResponse], not_modified: WireResponse,
                  delta: WireResponse, options: RestOptions) -> dict[str, Any]:
    polls = round(3600 / options.poll_seconds)
    changed_polls = min(polls, options.changes_per_hour)
    full_each = sum(r.request_bytes + r.response_bytes for r in full_pages)
    full_hour = polls * full_each
    smart_hour = (changed_polls * (delta.request_bytes + delta.response_bytes)
                  + (polls - changed_polls)
                  * (not_modified.request_bytes + not_modified.response_bytes))
    return {
        "pollsPerHour": polls, "pollsThatSeeAChange": changed_polls,
        "fullResponseBytes": full_each,
        "notModifiedBytes": not_modified.request_bytes + not_modified.response_bytes,
        "deltaBytes": delta.request_bytes + delta.response_bytes,
        "fullPollingBytesPerHour": full_hour,
        "smartPollingBytesPerHour": smart_hour,
        "reductionPercent": round(100 * (1 - smart_hour / full_hour), 1) if full_hour else None,
    }


def measure(port: int, db: BenchDatabase | None, token: str, options: RestOptions,
            cpus: CpuPlan, workdir: Path, log: Any, server_pid: int = 0) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    probe = wire_get(port, PATH, auth)
    if probe.status == 404:
        log(f"  REST: GET {PATH} answered 404: {NOT_AVAILABLE}")
        return {"available": False, "note": NOT_AVAILABLE}
    if probe.status != 200:
        return {"available": False, "note": f"GET {PATH} answered {probe.status}",
                "body": probe.body[:300].decode(errors="replace")}
    # the full list, every page, identity (what naive polling downloads)
    pages = [probe]
    cursor = next_page(probe)
    while cursor and len(pages) < 200:
        pages.append(wire_get(port, f"{PATH}?{urlencode({'cursor': cursor})}", auth))
        cursor = next_page(pages[-1])
    etag = probe.headers.get("etag", "")
    full_gzip = wire_get(port, PATH, {**auth, "Accept-Encoding": "gzip"})
    not_modified = wire_get(port, PATH, {**auth, "If-None-Match": etag,
                                         "Accept-Encoding": "gzip"})
    base_offset = response_offset(probe)
    if db is not None:
        change_purchase_requests(db, options.delta_changes)
        time.sleep(0.5)  # let the listener see them (the delta reads the log, the ETag moves)
    delta_target = f"{PATH}?since={base_offset}" if base_offset is not None else PATH
    delta = wire_get(port, delta_target, {**auth, "Accept-Encoding": "gzip"})
    delta_body = _json(delta)
    result: dict[str, Any] = {
        "available": True,
        "fullListPages": len(pages),
        "fullListBytes": sum(r.response_bytes for r in pages),
        "fullListGzipBytes": full_gzip.response_bytes,
        "etag": etag or None,
        "notModifiedStatus": not_modified.status,
        "offset": base_offset,
        "deltaStatus": delta.status,
        "deltaIsDelta": delta_body.get("isDelta") if isinstance(delta_body, dict) else None,
        "deltaRows": len(delta_body.get("data", [])) if isinstance(delta_body, dict) else None,
    }
    if not etag or not_modified.status != 304:
        result["warning"] = "no 304 for If-None-Match: the 304 numbers measure something else"
    if base_offset is None:
        result["warning"] = "no offset in the full response: the delta is a full list"
    result["polling"] = polling_bytes(pages, not_modified, delta, options)
    # the ETag after the changes, so the 304 run really gets 304s
    fresh = wire_get(port, PATH, auth)
    etag = fresh.headers.get("etag", etag)
    spy_pid = server_pid if options.profile else 0
    result["wrk"] = {
        "full": run_wrk(port, PATH, {**auth, "Accept-Encoding": "gzip"}, options, cpus,
                        workdir, "full", spy_pid),
        "notModified": run_wrk(port, PATH, {**auth, "If-None-Match": etag,
                                            "Accept-Encoding": "gzip"},
                               options, cpus, workdir, "304", spy_pid),
        "delta": run_wrk(port, delta_target, {**auth, "Accept-Encoding": "gzip"}, options,
                         cpus, workdir, "delta"),
    }
    for name, numbers in result["wrk"].items():
        if "error" in numbers:
            log(f"  REST {name}: {numbers['error']}")
        else:
            log(f"  REST {name:11s}: {numbers['requestsPerSecond']:,} req/s, p99 "
                f"{numbers['latencyMs']['p99']} ms, {numbers['bytesPerRequest']} B/response, "
                f"errors {numbers['errors']}")
            if numbers.get("profile", {}).get("self"):
                log(f"  REST {name} profile: {top_line(numbers['profile'])}")
    polling = result["polling"]
    log(f"  REST polling per hour: full {polling['fullPollingBytesPerHour']:,} B, smart "
        f"{polling['smartPollingBytesPerHour']:,} B ({polling['reductionPercent']}% less)")
    return result


def run_rest(db: BenchDatabase, wd: Path, options: RestOptions, log: Any) -> dict[str, Any]:
    cpus = CpuPlan.for_machine(options.pin)
    token = db.token()
    if options.url:
        port = int(options.url.rsplit(":", 1)[1].split("/")[0])
        return {"cpuPlan": "external server", "options": options.__dict__.copy(),
                **measure(port, None, token, options, cpus, wd, log)}
    seed_purchase_requests(db, options.seed_requests)
    server: ServerProcess = sinal_server(db, wd, cpus=cpus.server).start()
    try:
        result = measure(server.http_port, db, token, options, cpus, wd, log, server.pid)
        assert server.meter is not None
        result["serverRssMb"] = round(server.meter.rss() / 2**20, 1)
    finally:
        server.stop()
    return {"cpuPlan": cpus.describe(), "options": options.__dict__.copy(), **result}
