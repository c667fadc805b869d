"""Unit tests of the bench's own arithmetic and parsing (not of Sinal's performance).

    .venv/bin/pytest bench/test_bench.py
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter

import msgpack

from bench.fanout import ratios
from bench.loadclient import (
    FINE_BUCKETS,
    READY,
    ClientPlan,
    _ClientProcess,
    _Conn,
    client_frame,
    histogram_percentiles,
)
from bench.profile import summarise_collapsed
from bench.report import markdown, targets
from bench.rest import RestOptions, WireResponse, _complete, _unchunk, polling_bytes


def server_frame(payload: bytes, opcode: int = 2) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def unmask(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    offset = 2 if n < 126 else 4 if n == 126 else 10
    key = frame[offset:offset + 4]
    body = frame[offset + 4:]
    return bytes(b ^ key[i & 3] for i, b in enumerate(body))


def test_client_frame_is_masked_and_round_trips() -> None:
    for size in (0, 5, 125, 126, 300, 70_000):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        frame = client_frame(payload)
        assert frame[0] == 0x82 and frame[1] & 0x80
        assert unmask(frame) == payload


def test_histogram_percentiles() -> None:
    hist: Counter[int] = Counter()
    for ms in range(1, 101):  # 1..100 ms, one each
        latency = ms / 1000
        hist[int(latency * 100_000) if latency < 0.1 else FINE_BUCKETS + int(latency * 1000)] += 1
    p = histogram_percentiles(hist, 0.100)
    assert p["p50"] is not None and 49.9 <= p["p50"] <= 50.1
    assert p["p99"] is not None and 98.9 <= p["p99"] <= 99.6
    assert p["max"] == 100.0
    assert histogram_percentiles(Counter(), 0.0)["p50"] is None


def _client() -> _ClientProcess:
    parent, child = mp.Pipe()
    plan = ClientPlan("sinal", 1, 1, "token", ("supplier_changed",), phase="A")
    return _ClientProcess(plan, child)


def test_on_data_counts_frames_split_at_every_byte() -> None:
    sent = time.time() - 0.010
    data_frames = [server_frame(msgpack.packb({"event": "data_update", "data": {
        "name": f"bench @t={sent:.6f}A", "pad": "x" * pad}})) for pad in (10, 200, 70_000)]
    stale = server_frame(msgpack.packb({"data": {"name": f"bench @t={sent:.6f}B"}}))
    heartbeat = server_frame(msgpack.packb({"event": "heartbeat", "timestamp": 1}))
    stream = data_frames[0] + heartbeat + stale + data_frames[1] + data_frames[2]
    for split in range(0, len(stream), 997):
        client = _client()
        conn = _Conn(sock=None, state=READY)  # type: ignore[arg-type]
        now = time.time()
        client.on_data(conn, stream[:split], now)
        client.on_data(conn, stream[split:], now)
        c = client.counters
        assert (c.frames, c.stale_frames, c.control_frames) == (3, 1, 1), split
        assert conn.pending == b""
        assert 0.009 <= c.max_latency < 5.0


def test_summarise_collapsed() -> None:
    text = ("MainThread;run (trio/_core/_run.py:10);send (actors/transport.py:5) 80\n"
            "MainThread;run (trio/_core/_run.py:10);fan (actors/topic.py:7) 20\n")
    summary = summarise_collapsed(text)
    assert summary["samples"] == 100
    assert summary["self"][0] == {"function": "send (actors/transport.py)", "percent": 80.0}
    # the event loop's own frames are left out of the inclusive list
    assert [f["function"] for f in summary["inclusive"]] == ["send (actors/transport.py)",
                                                             "fan (actors/topic.py)"]


def test_http_completion_and_chunks() -> None:
    assert not _complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc")
    assert _complete(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde")
    assert _complete(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n")
    chunked = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert _complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert _unchunk(chunked) == b"abcde"


def test_polling_bytes() -> None:
    full = WireResponse(200, {}, b"", 100, 10_000)
    not_modified = WireResponse(304, {}, b"", 120, 180)
    delta = WireResponse(200, {}, b"", 130, 700)
    p = polling_bytes([full], not_modified, delta, RestOptions(poll_seconds=5,
                                                               changes_per_hour=60))
    assert p["pollsPerHour"] == 720
    assert p["fullPollingBytesPerHour"] == 720 * 10_100
    assert p["smartPollingBytesPerHour"] == 60 * 830 + 660 * 300
    assert p["reductionPercent"] == 96.6


def _phase(stack: str, n: int, phase: str, fps: int, p99: float) -> dict[str, object]:
    return {"stack": stack, "clients": n, "phase": phase, "framesPerSecond": fps,
            "latencyMs": {"p50": 1.0, "p95": 2.0, "p99": p99, "max": p99},
            "delivered": 1.0, "serverCpuPercent": 50.0, "serverRssMb": 80.0,
            "commitRate": 200.0, "clientCpuPercent": 10.0, "postgresCpuPercent": 5.0}


def test_targets_and_markdown() -> None:
    runs = [{"stack": s, "clients": 1000, "phases": [
        _phase(s, 1000, "paced", 200_000 if s == "sinal" else 100_000, 12.0 if s == "sinal"
               else 40.0),
        _phase(s, 1000, "burst", 300_000 if s == "sinal" else 100_000, 900.0)]}
        for s in ("sinal", "peer")]
    results = {
        "stamp": "x", "startedAt": "now", "cpuPlan": "not pinned", "seconds": 1.0,
        "machine": {"cpus": 2, "cpuModel": "cpu", "memoryMb": 1024, "loadAverage": [0, 0, 0],
                    "python": "3.11", "node": "v20", "postgres": "15", "wrk": None},
        "fanout": {"runs": runs, "ratios": ratios(runs), "options": {
            "rate": 200.0, "burst_deliveries": 1_000_000, "peer_source": "change_log"}},
        "rest": {"available": False, "note": "REST not available in this build"},
    }
    rows = {r["target"]: r for r in targets(results)}
    burst = rows["fan-out N=1,000: >= 1.5x the peer's delivered frames/s (burst)"]
    assert burst["verdict"] == "met" and burst["measured"].startswith("3.00x")
    assert rows["p99 commit-to-client < 20 ms at N=1,000 and 200 commits/s"]["verdict"] == "met"
    assert rows["REST 304 >= 3,000 req/s per process"]["measured"] == \
        "REST not available in this build"
    text = markdown(results, [])
    assert "| sinal | 1,000 | burst |" in text
    assert ratios(runs)[0]["framesPerSecondRatio"] == 3.0


def test_aggregates_part_reports_costs_per_change_and_ratios() -> None:
    import trio

    from bench.aggregates import AggregatesOptions, _measure, workflow_changes

    changes = workflow_changes(500, 3)
    assert [c.position for c in changes] == list(range(1, 501))
    assert {c.table for c in changes} >= {"purchase_requests", "approvals", "quotations",
                                          "purchase_orders"}
    result = trio.run(_measure, AggregatesOptions(changes=400, subscribers=16, repeats=1))
    assert result["changes"] == 400 and result["batches"] == 20
    assert result["dashboardFrames"] > 0 and result["fanoutBaselineUsPerChange"] > 0
    assert result["ratioAloneToFanout"] > 0 and result["ratioWithSubscribersToFanout"] > 0
    text = markdown({"stamp": "x", "startedAt": "now", "cpuPlan": "-", "seconds": 1.0,
                     "machine": {"cpus": 2, "cpuModel": "cpu", "memoryMb": 1, "python": "3",
                                 "loadAverage": [0], "node": "-", "postgres": "-",
                                 "wrk": None},
                     "aggregates": result}, [])
    assert "## Aggregates (the dashboard)" in text
    assert "aggregates, 16 subscribers, a flush per batch" in text


def test_storm_targets_and_tables() -> None:
    from bench.report_storms import storm_markdown, storm_targets

    latency = {"p50": 3.0, "p95": 9.0, "p99": 12.5, "max": 30.0}
    results = {
        "notify": {"runs": [
            {"stack": "sinal", "users": 10_000, "commitRate": 998.0, "delivered": 1.0,
             "latencyMs": latency, "serverCpuPercent": 40.0, "serverRssMb": 300.0,
             "connectSeconds": 9.0},
            {"stack": "peer", "error": "RuntimeError('gone')"}]},
        "connect": {"runs": [
            {"stack": "sinal", "connections": 10_000, "ready": 10_000, "seconds": 6.0,
             "connectMs": latency, "serverCpuSeconds": 5.0, "serverRssMb": 200.0,
             "clientProcesses": 4},
            {"stack": "peer", "connections": 10_000, "ready": 10_000, "seconds": 5.0,
             "connectMs": latency, "serverCpuSeconds": 4.0, "serverRssMb": 150.0,
             "clientProcesses": 4}]},
    }
    rows = {target.split(":")[0]: (ok, note) for target, _, ok, note in storm_targets(results)}
    assert rows["notification storm"] == (True, "")
    assert rows["connect storm 10,000"] == (False, "1.20x the peer's time")
    text = "\n".join(storm_markdown(results))
    assert "## Notification storm" in text and "## Connect storm" in text
    assert "RuntimeError('gone')" in text
