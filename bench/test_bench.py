"""Unit tests of the bench's own arithmetic and parsing (not of Sinal's performance).

    .venv/bin/pytest bench/test_bench.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing as mp
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any

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
from bench.loadgen import CompiledClients, build
from bench.profile import summarise_collapsed
from bench.report import markdown, targets
from bench.rest import RestOptions, WireResponse, _complete, _unchunk, polling_bytes


def server_frame(payload: bytes, opcode: int = 2, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([first, n])
    elif n < 65536:
        head = bytes([first, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + n.to_bytes(8, "big")
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
             "clientProcesses": 4, "clientCpuSeconds": 0.75, "client": "compiled",
             "fdLimit": "10,000 connections do not fit"}]},
    }
    rows = {target.split(":")[0]: (ok, note) for target, _, ok, note in storm_targets(results)}
    assert rows["notification storm"] == (True, "")
    assert rows["connect storm 10,000"] == (False, "1.20x the peer's time")
    text = "\n".join(storm_markdown(results))
    assert "## Notification storm" in text and "## Connect storm" in text
    assert "RuntimeError('gone')" in text
    assert "| peer | 1 | 10,000 | 10,000 | 5.0 | 3.0 | 12.5 | 4.0 | 0.75 |" in text
    assert "peer at 10,000: 10,000 connections do not fit." in text


# --------------------------------------------------------------------------- the compiled client
#
# bench/loadgen is compiled with `cc` (cached in bench/loadgen/build/); `--decode` feeds
# stdin to one connection as if a server had sent it and prints what the client makes of
# each message and what it sends back, so its parsers are checked on fixed inputs.

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2ln"
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key; --decode uses it


def accept_for(key: str) -> str:
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def upgrade_answer(key: str = RFC_KEY, accept: str | None = None) -> bytes:
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"sec-websocket-accept: {accept or accept_for(key)}\r\n\r\n").encode()


def fragments(payload: bytes, opcode: int, sizes: tuple[int, ...]) -> list[bytes]:
    """One message as len(sizes) + 1 frames: first `opcode` without FIN, continuations."""
    frames, pos = [], 0
    for i, size in enumerate((*sizes, len(payload))):
        part = payload[pos:pos + size] if i < len(sizes) else payload[pos:]
        pos += len(part)
        frames.append(server_frame(part, opcode if i == 0 else 0, fin=i == len(sizes)))
    return frames


def decode(stream: bytes, *args: str) -> list[list[dict[str, Any]]]:
    """The events the client prints for `stream`, fed whole and in chunks of 1 and 7 bytes
    (a frame, a header, a marker split anywhere)."""
    runs = []
    for chunk in (0, 1, 7):
        done = subprocess.run(
            [str(build()), "--decode", "--phase", "A", "--token", TOKEN, "--topics",
             "supplier_changed", "--chunk", str(chunk), *args],
            input=stream, capture_output=True, timeout=30, check=True)
        runs.append([json.loads(line) for line in done.stdout.splitlines()])
    return runs


def events(run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in run if e.get("event")]


def data_update(offset: int, sent: float, phase: str = "A") -> dict[str, Any]:
    return {"event": "data_update", "type": "supplier_changed", "op": "insert", "id": 7,
            "data": {"id": 7, "name": f"bench @t={sent:.6f}{phase}", "rating": 4.5,
                     "tags": ["a", None, True], "blob": {"nested": [1, -2, 2**40]}},
            "delta": {}, "offset": offset, "timestamp": "2024-01-15T10:30:00.125Z"}


def test_loadgen_decodes_msgpack_frames() -> None:
    sent = 1_705_314_600.125_25
    stream = (server_frame(msgpack.packb(data_update(1042, sent)))
              + server_frame(msgpack.packb({"event": "heartbeat", "timestamp": 1}))
              + server_frame(msgpack.packb(data_update(1043, sent, phase="B")))
              + server_frame(b"hi", opcode=9)
              + server_frame(msgpack.packb(data_update(1043, sent)))  # a repeat: regression
              + server_frame(msgpack.packb({"event": "resync", "topic": "t", "offset": 9,
                                            "reason": "slow_consumer"})))
    runs = decode(stream)
    assert events(runs[0]) == events(runs[1]) == events(runs[2])
    messages = [e for e in events(runs[0]) if e["event"] == "message"]
    assert [(m["kind"], m["offset"], m["phase"]) for m in messages] == [
        ("data_update", 1042, "A"), ("heartbeat", -1, "-"), ("data_update", 1043, "B"),
        ("data_update", 1043, "A"), ("resync", 9, "-")]
    assert messages[0]["mark"] == 1_705_314_600_125_250  # microseconds, exact
    assert {"event": "sent", "opcode": 10, "payload": b"hi".hex()} in runs[0]  # pong
    for run in runs:
        stats = run[-1]
        assert (stats["frames"], stats["staleFrames"], stats["dataUpdates"]) == (2, 1, 3)
        assert (stats["controlFrames"], stats["resyncs"], stats["offsetRegressions"]) == (3, 1, 1)
        assert stats["pendingBytes"] == 0 and stats["failed"] == {} and stats["ready"] == 1


def test_loadgen_json_handshake_and_fragmented_frame() -> None:
    sent = time.time() - 0.5
    update = json.dumps(data_update(5, sent)).encode()
    parts = fragments(update, 1, (40, 90))
    stream = (upgrade_answer()
              + server_frame(json.dumps({"event": "welcome", "sessionId": "s",
                                         "heartbeatInterval": 30000}).encode(), opcode=1)
              + server_frame(b'{"event": "subscribed", "events": ["supplier_changed"], '
                             b'"offsets": {"supplier_changed": 4}, "ref": 1}', opcode=1)
              + parts[0] + server_frame(b"", opcode=9) + parts[1] + parts[2])
    runs = decode(stream, "--encoding", "json", "--decode-state", "http")
    assert events(runs[0]) == events(runs[1]) == events(runs[2])
    sent_frames = [e for e in runs[0] if e.get("event") == "sent"]
    assert [(s["opcode"], json.loads(bytes.fromhex(s["payload"]))) for s in sent_frames[:2]] \
        == [(1, {"event": "connect", "token": TOKEN}),
            (1, {"event": "subscribe", "events": ["supplier_changed"], "ref": 1})]
    assert sent_frames[2:] == [{"event": "sent", "opcode": 10, "payload": ""}]  # the pong
    kinds = [e.get("kind", e["event"]) for e in events(runs[0]) if e["event"] != "sent"]
    assert kinds == ["welcome", "subscribed", "ready", "control", "data_update"]
    for run in runs:
        stats = run[-1]
        assert (stats["frames"], stats["dataUpdates"], stats["connects"]) == (1, 1, 1)
        assert 0.5 <= stats["maxLatency"] < 60


def test_loadgen_refuses_a_wrong_accept_and_reports_errors() -> None:
    wrong = decode(upgrade_answer(accept=accept_for("another key")), "--decode-state", "http")
    assert {"event": "fail", "reason": "upgrade: wrong Sec-WebSocket-Accept"} in wrong[0]
    refused = decode(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", "--decode-state", "http")
    assert {"event": "fail", "reason": "upgrade refused: HTTP/1.1 503 Service Unavailable"} \
        in refused[1]
    error = msgpack.packb({"event": "error", "code": "auth_failed", "message": "bad token"})
    close = (4102).to_bytes(2, "big") + b"auth_failed"
    runs = decode(server_frame(error) + server_frame(close, opcode=8),
                  "--decode-state", "subscribing")
    for run in runs:
        assert {"event": "fail", "reason": "error auth_failed"} in run
        assert run[-1]["failed"] == {"error auth_failed": 1}
    closed = decode(server_frame(close, opcode=8))  # ready: a close ends the connection
    assert closed[2][-1]["closes"] == {"closed 4102 auth_failed": 1}
    odd = decode(server_frame((4000).to_bytes(2, "big") + b'say "hi"\x01\xff', opcode=8))
    assert odd[0][-1]["closes"] == {'closed 4000 say "hi"??': 1}  # quoted, printable
    typo = subprocess.run([str(build()), "--host", "127.0.0.256", "--token", TOKEN],
                          capture_output=True, text=True, timeout=30)
    assert typo.returncode == 2 and "--host takes an IPv4 address" in typo.stderr
    bad = decode(bytes([0xC2, 0x01, 0x00]))  # RSV1 set: no extension was negotiated
    assert bad[0][-1]["closes"] == {"protocol: bad frame header": 1}


def test_loadgen_socketio_handshake_and_event() -> None:
    sent = time.time() - 0.25
    stream = (server_frame(b'0{"sid":"abc","upgrades":[],"pingInterval":25000,'
                           b'"pingTimeout":20000,"maxPayload":65536}', opcode=1)
              + server_frame(msgpack.packb({"type": 0, "nsp": "/", "data": {"sid": "x"}}))
              + server_frame(msgpack.packb({"type": 3, "nsp": "/", "id": 1, "data": [
                  {"events": ["supplier_changed"], "offsets": {"supplier_changed": 3}}]}))
              + server_frame(b"2", opcode=1)
              + server_frame(msgpack.packb({"type": 2, "nsp": "/", "data": [
                  "data_update", {k: v for k, v in data_update(4, sent).items()
                                  if k != "event"}]})))
    runs = decode(stream, "--protocol", "socketio", "--decode-state", "open")
    assert events(runs[0]) == events(runs[1]) == events(runs[2])
    sent_frames = [e for e in runs[0] if e.get("event") == "sent"]
    assert msgpack.unpackb(bytes.fromhex(sent_frames[0]["payload"])) == {
        "type": 0, "nsp": "/", "data": {"token": TOKEN}}
    assert msgpack.unpackb(bytes.fromhex(sent_frames[1]["payload"])) == {
        "type": 2, "nsp": "/", "id": 1, "data": ["subscribe", {"events": ["supplier_changed"]}]}
    assert (sent_frames[2]["opcode"], sent_frames[2]["payload"]) == (1, b"3".hex())
    kinds = [e.get("kind", e["event"]) for e in events(runs[0]) if e["event"] != "sent"]
    assert kinds == ["eio_open", "sio_connect", "sio_ack", "ready", "eio_ping", "data_update"]
    for run in runs:
        assert (run[-1]["frames"], run[-1]["dataUpdates"], run[-1]["connects"]) == (1, 1, 1)
        assert 0.25 <= run[-1]["maxLatency"] < 60
    rejected = decode(server_frame(b'0{"sid":"abc"}', opcode=1) + server_frame(msgpack.packb(
        {"type": 4, "nsp": "/", "data": {"message": "auth_failed"}})),
        "--protocol", "socketio", "--decode-state", "open")
    for run in rejected:
        assert run[-1]["failed"] == {"connect_error auth_failed": 1}


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("client closed")
        data += chunk
    return data


def _client_message(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = _read_exact(sock, 2)
    assert b1 & 0x80, "client frames are masked"
    n = b1 & 0x7F
    if n >= 126:
        n = int.from_bytes(_read_exact(sock, 2 if n == 126 else 8), "big")
    key = _read_exact(sock, 4)
    return b0 & 0x0F, bytes(b ^ key[i & 3] for i, b in enumerate(_read_exact(sock, n)))


def _hold_until_reset(conn: socket.socket) -> None:
    """Read until the client leaves: it aborts its sockets (RST, so that it leaves no
    TIME_WAIT on 127.0.0.x); a clean close (EOF) is an error."""
    try:
        while conn.recv(4096):
            pass
    except ConnectionResetError:
        return
    raise AssertionError("the client closed its socket instead of aborting it")


def _fake_upgrade(conn: socket.socket, expect_subprotocol: bool = False) -> None:
    """Read the client's upgrade request and answer 101 with sinal.msgpack.v1."""
    conn.settimeout(30)
    head = b""
    while b"\r\n\r\n" not in head:
        head += _read_exact(conn, 1)
    key = re.search(rb"Sec-WebSocket-Key: (\S+)", head)
    assert key is not None
    if expect_subprotocol:
        assert b"Sec-WebSocket-Protocol: sinal.msgpack.v1" in head
    conn.sendall(upgrade_answer(key.group(1).decode())[:-2]
                 + b"Sec-WebSocket-Protocol: sinal.msgpack.v1\r\n\r\n")


def _fake_sinal(conn: socket.socket, errors: list[BaseException], read: threading.Event) -> None:
    """Just enough of a Sinal node for one connection: upgrade, connect + subscribe ->
    subscribed, the client's first heartbeat, one data_update, then a ping whose pong
    proves the client has read the data_update; then hold until the client leaves."""
    try:
        _fake_upgrade(conn, expect_subprotocol=True)
        assert msgpack.unpackb(_client_message(conn)[1]) == {"event": "connect", "token": TOKEN}
        assert msgpack.unpackb(_client_message(conn)[1]) == {
            "event": "subscribe", "events": ["supplier_changed"], "ref": 1}
        conn.sendall(server_frame(msgpack.packb({"event": "subscribed", "events": [
            "supplier_changed"], "offsets": {"supplier_changed": 1}, "ref": 1})))
        opcode, beat = _client_message(conn)
        assert opcode == 2 and msgpack.unpackb(beat)["event"] == "heartbeat"
        conn.sendall(server_frame(msgpack.packb(data_update(2, time.time())))
                     + server_frame(b"barrier", opcode=9))
        while _client_message(conn) != (10, b"barrier"):
            pass  # heartbeats
        read.set()
        _hold_until_reset(conn)
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        read.set()
        conn.close()


def test_loadgen_end_to_end_spreads_source_addresses() -> None:
    """Six connections from two loadgen processes, two per source address (127.0.0.2-4),
    through a real handshake, heartbeats, a data frame and a ping, over real sockets."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    peers: list[str] = []
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    read = [threading.Event() for _ in range(6)]

    def accept_all() -> None:
        for i in range(6):
            conn, address = listener.accept()
            peers.append(address[0])
            thread = threading.Thread(target=_fake_sinal, args=(conn, errors, read[i]))
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept_all)
    acceptor.start()
    plan = ClientPlan("sinal", listener.getsockname()[1], 6, TOKEN, ("supplier_changed",),
                      heartbeat_interval=0.05, phase="A")
    with CompiledClients(plan, 2, per_address=2) as clients:
        report = clients.wait_ready(timeout=30)
        acceptor.join(30)
        assert all(event.wait(30) for event in read)  # every client read its data frame
        stats = clients.stats()
    listener.close()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert report["ready"] == 6 and report["failed"] == {} and report["sourceAddresses"] == 3
    assert report["connectMs"]["count"] == 6
    assert Counter(peers) == {"127.0.0.2": 2, "127.0.0.3": 2, "127.0.0.4": 2}
    assert (stats["ready"], stats["frames"], stats["dataUpdates"]) == (6, 6, 6)
    assert stats["controlFrames"] == 6 and stats["offsetRegressions"] == 0  # the pings
    assert stats["heartbeats"] >= 6 and stats["latencyMs"]["max"] < 30_000
    assert len(clients.procs) == 2 and all(p.returncode == 0 for p in clients.procs)


def test_loadgen_counts_a_marked_notification_frame() -> None:
    """The notification storm's frames: a `notification` whose message holds the marker is
    a data frame (timed, of its phase), in Sinal's MessagePack and socket.io's packets."""
    sent = time.time() - 0.125
    note = {"event": "notification", "id": "n-1", "message": f"bench @t={sent:.6f}N",
            "type": "order_issued", "action": None, "timestamp": "2024-01-15T10:30:00Z"}
    runs = decode(server_frame(msgpack.packb(note)) + server_frame(msgpack.packb(
        {**note, "message": f"bench @t={sent:.6f}M"})), "--phase", "N")
    for run in runs:
        assert (run[-1]["frames"], run[-1]["staleFrames"], run[-1]["dataUpdates"]) == (1, 1, 0)
        assert 0.125 <= run[-1]["maxLatency"] < 60
    packet = msgpack.packb({"type": 2, "nsp": "/", "data": [
        "notification", {k: v for k, v in note.items() if k != "event"}]})
    for run in decode(server_frame(packet), "--protocol", "socketio", "--phase", "N"):
        assert (run[-1]["frames"], run[-1]["staleFrames"]) == (1, 0)


def test_token_lines_give_each_connection_its_own_token() -> None:
    from bench.loadgen import token_lines

    plan = ClientPlan("sinal", 1, 4, "t", ("x",), tokens=("a", "b", "c", "d"))
    assert token_lines(replace(plan, tokens=())) == ["t"]
    assert token_lines(plan) == ["a", "b", "c", "d"]
    # loadgen gives connection index_base + j the line (index_base + j) mod 4
    for base in (1, 5, 6):
        lines = token_lines(plan, base)
        assert [lines[(base + j) % 4] for j in range(4)] == ["a", "b", "c", "d"]


def _fake_login(conn: socket.socket, tokens: dict[str, str],
                errors: list[BaseException]) -> None:
    """Upgrade, read `connect {token}` and `subscribe`, answer `subscribed`, hold."""
    try:
        _fake_upgrade(conn)
        peer = conn.getpeername()[0]
        tokens[peer] = msgpack.unpackb(_client_message(conn)[1])["token"]
        assert msgpack.unpackb(_client_message(conn)[1])["event"] == "subscribe"
        conn.sendall(server_frame(msgpack.packb({"event": "subscribed", "events": ["x"],
                                                 "offsets": {"x": 1}, "ref": 1})))
        _hold_until_reset(conn)
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        conn.close()


def test_loadgen_sends_each_connection_its_own_token() -> None:
    """Five connections from two processes, numbered from 7 (a later step's), each log in
    with its own token of `plan.tokens`, the j-th connection with the j-th token (the
    notification storm's one user per socket). Two connections per source address over
    12 planned: connection 7 + j comes from 127.0.0.(2 + (7 + j) mod 6), one each."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    tokens: dict[str, str] = {}
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def accept_all() -> None:
        for _ in range(5):
            conn, _address = listener.accept()
            thread = threading.Thread(target=_fake_login, args=(conn, tokens, errors))
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=accept_all)
    acceptor.start()
    users = tuple(f"user-{i}" for i in range(5))
    plan = ClientPlan("sinal", listener.getsockname()[1], 5, "shared", ("x",), tokens=users)
    with CompiledClients(plan, 2, index_base=7, planned_total=12, per_address=2) as clients:
        report = clients.wait_ready(timeout=30)
    acceptor.join(30)
    listener.close()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert report["ready"] == 5 and report["failed"] == {}
    assert tokens == {f"127.0.0.{2 + (7 + j) % 6}": users[j] for j in range(5)}


# --------------------------------------------------------------------------- issue #11


class _FixedMeter:
    def __init__(self, cpu: float, wall: float, rss: float) -> None:
        self.marked = 0
        self.result = {"cpuSeconds": cpu, "cpuPercent": round(100 * cpu / wall, 1),
                       "rssMb": rss, "peakRssMb": rss, "wallSeconds": wall}

    def mark(self) -> None:
        self.marked += 1

    def window(self) -> dict[str, float]:
        return dict(self.result)


def test_group_meter_sums_the_nodes_and_keeps_nginx_apart() -> None:
    from bench.workers import GroupMeter

    parts = {"node0": _FixedMeter(1.0, 2.0, 100), "node1": _FixedMeter(0.5, 2.0, 50),
             "nginx": _FixedMeter(3.0, 2.0, 10)}
    meter = GroupMeter(parts, ("node0", "node1"))  # type: ignore[arg-type]
    meter.mark()
    assert all(p.marked == 1 for p in parts.values())
    window = meter.window()
    assert window["cpuSeconds"] == 1.5 and window["cpuPercent"] == 75.0
    assert window["rssMb"] == 150
    assert meter.last["nginx"]["cpuSeconds"] == 3.0


def test_workers_ratios_are_against_one_worker() -> None:
    from bench.workers import ratios as worker_ratios

    runs = {"workers1": {"requestsPerSecond": 3000, "latencyMs": {"p99": 20.0}},
            "workers2": {"requestsPerSecond": 5700, "latencyMs": {"p99": 10.0}},
            "nginx2": {"error": "nginx exited"}}
    out = worker_ratios(runs, {"rps": "requestsPerSecond", "p99": "latencyMs.p99"})
    assert out == {"workers2": {"rps": 1.9, "p99": 0.5}, "nginx2": {"rps": None, "p99": None}}


def test_workers_markdown_has_ratios_and_placement() -> None:
    from bench.report_workers import markdown as workers_markdown

    phase = {"offeredFramesPerSecond": 1_000_000, "commitRate": 200.1,
             "framesPerSecond": 900_000, "delivered": 1.0,
             "latencyMs": {"p50": 40.0, "p99": 90.0}, "serverCpuPercent": 88.0,
             "serverUsPerFrame": 0.97, "clientCpuPercent": 50.0, "postgresCpuPercent": 2.0}
    results = {
        "startedAt": "2026-11-30 08:00:00 UTC", "command": "python -m bench.workers",
        "backgroundCpuPercent": 1.0, "seconds": 90,
        "machine": {"cpus": 2, "cpuModel": "x", "memoryMb": 1024, "loadAverage": [0, 0, 0],
                    "postgres": "15", "wrk": "wrk"},
        "placement": "nothing pinned",
        "options": {"wrk_connections": 64, "wrk_threads": 2, "wrk_seconds": 8.0,
                    "clients": 5000, "rates": (200.0,), "paced_seconds": 2.0,
                    "max_deliveries": 5_000_000},
        "rest304": {"runs": {"workers1": {"requestsPerSecond": 3000, "latencyMs": {}},
                             "workers2": {"requestsPerSecond": 5700, "latencyMs": {}}},
                    "ratios": {"workers2": {"requestsPerSecond": 1.9}}},
        "fanout": {"runs": {"workers1": {"phases": {"200": phase}},
                            "nginx2": {"error": "RuntimeError('nginx')", "phases": {}}},
                   "ratios": {"200": {"nginx2": {"framesPerSecond": None}}}},
    }
    text = workers_markdown(results)
    assert "nothing pinned" in text
    assert "| `--workers 2` (SO_REUSEPORT) | 5,700 | 1.90x |" in text
    assert "| `--workers 1` (one node direct) at 200/s | 1,000,000 | 200.1 | 900,000 | 1.00 |" \
        in text
    assert "RuntimeError('nginx')" in text


def test_follow_window_and_fit() -> None:
    from bench.follow import fit, window

    def snap(t: float, head: int, reads: int, changes: int, cpu: float) -> dict[str, Any]:
        stats = {"reads": reads, "pings": 1, "changesRead": changes, "emptyReads": 0,
                 "wakeups": reads, "echoes": 0, "position": head - 1}
        return {"t": t, "head": head, "xact": 0, "stats": [stats, stats],
                "listenerCpu": [cpu, cpu], "pgListenerCpu": 2 * cpu, "pgWriterCpu": 0.0}

    row = window(snap(10.0, 100, 50, 100, 1.0), snap(12.0, 2100, 1050, 2100, 1.5), 2)
    assert row["sequencerRowsPerSecond"] == 1000.0
    assert row["readsPerSecondPerListener"] == 500.0
    assert row["changesPerRead"] == 2.0
    assert row["pgListenersCpuPercent"] == 50.0 and row["pgCpuPercentPerListener"] == 25.0
    assert row["pgUsPerRead"] == 500.0  # 1 s of backend CPU over 2,000 reads
    assert row["maxLagAtEnd"] == 1
    rows = [{"listeners": k, "rate": 1000.0, "pgListenersCpuPercent": 25.0 + 5.0 * k}
            for k in (1, 2, 4, 8)]
    fitted = fit(rows, 1000.0)
    assert fitted is not None
    assert fitted["cpuPercentPerListener"] == 5.0 and fitted["interceptPercent"] == 25.0
    assert fitted["listenersPerPostgresCore"] == 15
    assert fit(rows, 200.0) is None
