"""The load client: many WebSockets per process, raw sockets and epoll, no framework.

One `LoadClients` object starts K processes (spawned, pinned to the load CPUs); each
opens its share of the connections (as fast as a handshake window allows, or at a fixed
arrival rate), authenticates and subscribes, then drains every socket, counts the data
frames and measures each frame's latency. It speaks two dialects over the same WebSocket
framing:

* ``sinal``: `/ws`, subprotocol `sinal.msgpack.v1`, `connect {token}` then `subscribe
  {events}`; ready on `subscribed`. Heartbeat frames when asked.
* ``socketio``: Engine.IO 4 over WebSocket only (`/socket.io/?EIO=4&transport=websocket`),
  socket.io packets encoded by socket.io-msgpack-parser (a msgpack map {type, nsp, data,
  id}); CONNECT with `{token}`, then `emit("subscribe", {events}, ack)`; ready on the ack.
  Engine.IO pings ("2") are answered ("3"); heartbeats are `emit("heartbeat", {...})`.

A data frame is any frame whose payload holds the marker ``@t=<unix time, 17 chars><phase>``
that the writer puts into the row (bench.writer); frames of another phase than the
current one are counted apart (stale). Latency = receive time - that time, both
`time.time()` on this machine. Frames are parsed only as far as their headers plus one
`bytes.find` for the marker, so the client costs far less per frame than a server.
Latencies go into a histogram (10 us buckets below 100 ms, 1 ms above) that merges
across processes.

The driver talks to each process over a pipe. The process sends ``("ready", report)``
once every connection it was asked for has been tried; the driver sends ``("stats",
reset, phase)`` (answered with ``("stats", counters)``) and ``("exit",)``.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import itertools
import math
import multiprocessing as mp
import os
import select
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection as Pipe
from typing import Any

import msgpack

from bench.harness import pin_self, raise_fd_limit

MARK = b"@t="
MARK_DIGITS = 17  # f"{time.time():.6f}" until the year 2286
FINE_BUCKETS = 10_000  # 10 us each, up to 100 ms

HANDSHAKE_DUE, LIFETIME_DUE = 0, 1
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux

# connection states
OPENING, AWAIT_SUBSCRIBED, SIO_AWAIT_OPEN, SIO_AWAIT_CONNECT, SIO_AWAIT_ACK, READY, \
    CLOSED = range(7)


def client_frame(payload: bytes, *, text: bool = False, opcode: int | None = None) -> bytes:
    """A masked client frame (RFC 6455 5.3), FIN set."""
    head = bytearray([0x80 | (opcode if opcode is not None else (0x1 if text else 0x2))])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    key = os.urandom(4)
    head += key
    return bytes(head) + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


CLOSE_NORMAL = client_frame((1000).to_bytes(2, "big"), opcode=0x8)


def bucket_value(bucket: int) -> float:
    """Midpoint of a latency bucket, in seconds."""
    if bucket < FINE_BUCKETS:
        return (bucket + 0.5) / 100_000
    return (bucket - FINE_BUCKETS + 0.5) / 1000


def histogram_percentiles(hist: Counter[int], max_latency: float) -> dict[str, float | None]:
    """p50/p95/p99 (bucket midpoints, at most the max) and the exact max, in ms."""
    total = sum(hist.values())
    if not total:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    result: dict[str, float | None] = {}
    keys = sorted(hist)
    seen, i = 0, 0
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        rank = math.ceil(q * total)
        while seen < rank:
            seen += hist[keys[i]]
            i += 1
        result[name] = round(min(bucket_value(keys[i - 1]), max_latency) * 1000, 2)
    result["max"] = round(max_latency * 1000, 2)
    return result


@dataclass(frozen=True, slots=True)
class ClientPlan:
    protocol: str  # "sinal" | "socketio"
    port: int
    connections: int
    token: str
    topics: tuple[str, ...]
    heartbeat_interval: float = 0.0  # seconds between client heartbeats; 0: none
    cpus: frozenset[int] = frozenset()
    handshake_window: int = 128  # handshakes in flight at once
    handshake_timeout: float = 30.0  # per connection
    connect_rate: float = 0.0  # arrivals per second (this process); 0: as fast as possible
    lifetime: float = 0.0  # seconds a connection stays after it is ready; 0: until exit
    phase: str = "0"  # the writer phase whose frames count until the driver says otherwise
    tokens: tuple[str, ...] = ()  # one per connection (distinct users); else `token` for all
    source_hosts: tuple[str, ...] = ()  # local addresses to connect from, in turn (127.0.0.x:
    # each gives its own ~28,000 ephemeral ports towards one server port)


@dataclass(slots=True, eq=False)
class _Conn:
    sock: socket.socket
    state: int = OPENING
    pending: bytes = b""
    head: bytes = b""
    opened_at: float = 0.0  # perf_counter
    hello: bytes = b""  # its own connect frame(s) when the plan has a token per connection


@dataclass
class _Counters:
    frames: int = 0
    stale_frames: int = 0
    bytes: int = 0
    control_frames: int = 0
    resyncs: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    hist: Counter[int] = field(default_factory=Counter)
    max_latency: float = 0.0
    first_at: float = 0.0
    last_at: float = 0.0
    cpu0: float = field(default_factory=time.process_time)
    wall0: float = field(default_factory=time.perf_counter)
    heartbeats: int = 0
    opened: int = 0
    completed: int = 0  # connections closed by us at the end of their lifetime
    connect_ms: list[float] = field(default_factory=list)
    peak_ready: int = 0


class _ClientProcess:
    def __init__(self, plan: ClientPlan, pipe: Pipe) -> None:
        self.plan = plan
        self.pipe = pipe
        self.poller = select.epoll()
        self.by_fd: dict[int, _Conn] = {}
        self.ready = 0
        self.started = 0
        self.failed: Counter[str] = Counter()
        self.counters = _Counters()
        self.phase = ord(plan.phase)  # the writer's phase tag that counts (bench.writer)
        self.buf = bytearray(1 << 18)
        self.view = memoryview(self.buf)
        self.beats: deque[tuple[float, _Conn]] = deque()
        # deadlines, a heap of (due, seq, kind, conn): HANDSHAKE_DUE or LIFETIME_DUE
        self.endings: list[tuple[float, int, int, _Conn]] = []
        self.seq = itertools.count()
        self.t0 = time.monotonic()
        self.reported_ready = False
        if plan.protocol == "socketio":
            self.path = "/socket.io/?EIO=4&transport=websocket"
            self.extra_headers = ""
            self.heartbeat = client_frame(msgpack.packb(
                {"type": 2, "nsp": "/", "data": ["heartbeat", {"timestamp": 0}]}))
        else:
            self.path = "/ws"
            self.extra_headers = "Sec-WebSocket-Protocol: sinal.msgpack.v1\r\n"
            self.heartbeat = client_frame(msgpack.packb(
                {"event": "heartbeat", "timestamp": int(time.time() * 1000)}))
        self.sinal_hello = client_frame(msgpack.packb(
            {"event": "connect", "token": plan.token})) + client_frame(msgpack.packb(
                {"event": "subscribe", "events": list(plan.topics), "ref": 1}))
        self.sio_connect = client_frame(msgpack.packb(
            {"type": 0, "nsp": "/", "data": {"token": plan.token}}))
        self.sio_subscribe = client_frame(msgpack.packb(
            {"type": 2, "nsp": "/", "data": ["subscribe", {"events": list(plan.topics)}],
             "id": 1}))
        self.sio_pong = client_frame(b"3", text=True)

    # --- opening and handshakes ------------------------------------------------------------

    def open_one(self) -> None:
        self.started += 1
        self.counters.opened += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened_at = time.perf_counter()
        index = self.started - 1
        try:
            if self.plan.source_hosts:
                # the port is chosen at connect(), per destination, not at bind()
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.plan.source_hosts[index % len(self.plan.source_hosts)], 0))
            sock.connect(("127.0.0.1", self.plan.port))
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.plan.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{self.extra_headers}\r\n").encode())
        except OSError as exc:
            sock.close()
            self.failed[f"connect: {exc.strerror or exc}"] += 1
            return
        sock.setblocking(False)
        conn = _Conn(sock, OPENING, opened_at=opened_at, hello=self.hello_for(index))
        self.by_fd[sock.fileno()] = conn
        self.poller.register(sock.fileno(), select.EPOLLIN)
        if self.plan.handshake_timeout:
            heapq.heappush(self.endings, (time.monotonic() + self.plan.handshake_timeout,
                                          next(self.seq), HANDSHAKE_DUE, conn))

    def hello_for(self, index: int) -> bytes:
        """The first frame(s) of connection `index` when each has its own token."""
        if not self.plan.tokens:
            return b""
        token = self.plan.tokens[index % len(self.plan.tokens)]
        if self.plan.protocol == "socketio":
            return client_frame(msgpack.packb({"type": 0, "nsp": "/", "data": {"token": token}}))
        return client_frame(msgpack.packb({"event": "connect", "token": token})) + \
            client_frame(msgpack.packb({"event": "subscribe", "events": list(self.plan.topics),
                                        "ref": 1}))

    def open_more(self) -> None:
        plan = self.plan
        in_flight = len(self.by_fd) - self.ready
        allowed = plan.connections
        if plan.connect_rate:
            allowed = min(allowed, int((time.monotonic() - self.t0) * plan.connect_rate) + 1)
        while self.started < allowed and in_flight < plan.handshake_window:
            self.open_one()
            in_flight += 1

    def fail(self, conn: _Conn, reason: str) -> None:
        if conn.state == CLOSED:
            return
        if conn.state == READY:
            self.ready -= 1
            self.counters.closes[reason] += 1
        else:
            self.failed[reason] += 1
        conn.state = CLOSED
        fd = conn.sock.fileno()
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(fd)
        self.by_fd.pop(fd, None)
        conn.sock.close()

    def finish(self, conn: _Conn) -> None:
        """End of a connection's lifetime: close it politely."""
        with contextlib.suppress(OSError):
            conn.sock.send(CLOSE_NORMAL)
        self.ready -= 1
        self.counters.completed += 1
        conn.state = CLOSED
        fd = conn.sock.fileno()
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(fd)
        self.by_fd.pop(fd, None)
        conn.sock.close()

    def handshake_data(self, conn: _Conn, data: bytes) -> None:
        if conn.state == OPENING:
            conn.head += data
            if b"\r\n\r\n" not in conn.head:
                return
            head, data = conn.head.split(b"\r\n\r\n", 1)
            conn.head = b""
            status = head.split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 101"):
                self.fail(conn, f"upgrade refused: {status.decode(errors='replace')[:60]}")
                return
            try:
                if self.plan.protocol == "socketio":
                    conn.state = SIO_AWAIT_OPEN
                else:
                    conn.state = AWAIT_SUBSCRIBED
                    conn.sock.sendall(conn.hello or self.sinal_hello)
            except OSError as exc:
                self.fail(conn, f"send: {exc.strerror or exc}")
                return
        data = conn.pending + data
        conn.pending = b""
        for opcode, payload, start in self.split_frames(data):
            if conn.state == CLOSED:
                return
            if conn.state == READY:  # the rest is the steady state's business
                conn.pending = data[start:]
                self.on_data(conn, b"", time.time())
                return
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.fail(conn, f"closed {code} {payload[2:].decode(errors='replace')}")
                return
            if opcode == -1:
                conn.pending = payload  # an incomplete frame: wait for the rest
                return
            if opcode in (1, 2):
                try:
                    self.handshake_message(conn, opcode, payload)
                except OSError as exc:
                    self.fail(conn, f"send: {exc.strerror or exc}")
                    return

    def handshake_message(self, conn: _Conn, opcode: int, payload: bytes) -> None:
        if conn.state == AWAIT_SUBSCRIBED:
            message = msgpack.unpackb(payload)
            event = message.get("event")
            if event == "subscribed":
                self.become_ready(conn)
            elif event == "error":
                self.fail(conn, f"error {message.get('code')}")
            return
        if conn.state == SIO_AWAIT_OPEN:
            if opcode == 1 and payload[:1] == b"0":
                conn.state = SIO_AWAIT_CONNECT
                conn.sock.sendall(conn.hello or self.sio_connect)
            return
        if opcode == 1:
            if payload == b"2":
                conn.sock.sendall(self.sio_pong)
            return
        packet = msgpack.unpackb(payload)
        kind = packet.get("type")
        if conn.state == SIO_AWAIT_CONNECT:
            if kind == 0:
                conn.state = SIO_AWAIT_ACK
                conn.sock.sendall(self.sio_subscribe)
            elif kind == 4:
                self.fail(conn, f"connect_error {packet.get('data')}")
        elif conn.state == SIO_AWAIT_ACK and kind == 3 and packet.get("id") == 1:
            self.become_ready(conn)

    def become_ready(self, conn: _Conn) -> None:
        conn.state = READY
        self.ready += 1
        c = self.counters
        c.peak_ready = max(c.peak_ready, self.ready)
        c.connect_ms.append((time.perf_counter() - conn.opened_at) * 1000)
        now = time.monotonic()
        if self.plan.heartbeat_interval > 0:
            # without a lifetime, spread the first beats over one interval
            phase = 1.0 if self.plan.lifetime else (self.ready % 97) / 97
            self.beats.append((now + self.plan.heartbeat_interval * phase, conn))
        if self.plan.lifetime:
            heapq.heappush(self.endings, (now + self.plan.lifetime, next(self.seq),
                                          LIFETIME_DUE, conn))

    @staticmethod
    def split_frames(data: bytes) -> list[tuple[int, bytes, int]]:
        """Whole frames of `data` (slow path, for handshakes): (opcode, payload, start),
        and a last entry (-1, rest, its start) with the bytes of an incomplete frame."""
        frames: list[tuple[int, bytes, int]] = []
        pos, end = 0, len(data)
        while end - pos >= 2:
            b1 = data[pos + 1] & 0x7F
            if b1 < 126:
                hl, plen = 2, b1
            elif b1 == 126:
                if end - pos < 4:
                    break
                hl, plen = 4, int.from_bytes(data[pos + 2:pos + 4], "big")
            else:
                if end - pos < 10:
                    break
                hl, plen = 10, int.from_bytes(data[pos + 2:pos + 10], "big")
            if pos + hl + plen > end:
                break
            frames.append((data[pos] & 0x0F, data[pos + hl:pos + hl + plen], pos))
            pos += hl + plen
        frames.append((-1, data[pos:], pos))
        return frames

    # --- steady state ---------------------------------------------------------------------

    def on_data(self, conn: _Conn, data: bytes, now: float) -> None:
        c = self.counters
        phase = self.phase
        if conn.pending:
            data = conn.pending + data
            conn.pending = b""
        pos, end = 0, len(data)
        find = data.find
        while end - pos >= 2:
            b1 = data[pos + 1] & 0x7F
            if b1 < 126:
                ps = pos + 2
                fe = ps + b1
            elif b1 == 126:
                if end - pos < 4:
                    break
                ps = pos + 4
                fe = ps + ((data[pos + 2] << 8) | data[pos + 3])
            else:
                if end - pos < 10:
                    break
                ps = pos + 10
                fe = ps + int.from_bytes(data[pos + 2:pos + 10], "big")
            if fe > end:
                break
            i = find(MARK, ps, fe)
            if i >= 0:
                if data[i + 3 + MARK_DIGITS] != phase:
                    c.stale_frames += 1  # a frame of an earlier phase, still arriving
                    pos = fe
                    continue
                latency = now - float(data[i + 3:i + 3 + MARK_DIGITS])
                c.frames += 1
                c.hist[int(latency * 100_000) if latency < 0.1 else
                       FINE_BUCKETS + int(latency * 1000)] += 1
                if latency > c.max_latency:
                    c.max_latency = latency
                if not c.first_at:
                    c.first_at = now
                c.last_at = now
            else:
                self.control(conn, data[pos] & 0x0F, data[ps:fe])
                if conn.state == CLOSED:
                    return
            pos = fe
        if pos < end:
            conn.pending = data[pos:]

    def control(self, conn: _Conn, opcode: int, payload: bytes) -> None:
        c = self.counters
        c.control_frames += 1
        if opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.fail(conn, f"closed {code} {payload[2:].decode(errors='replace')}")
        elif opcode == 9:
            with contextlib.suppress(OSError):
                conn.sock.send(client_frame(payload, opcode=0xA))
        elif opcode == 1 and payload == b"2":  # Engine.IO ping
            with contextlib.suppress(OSError):
                conn.sock.send(self.sio_pong)
        elif b"resync" in payload:
            c.resyncs += 1

    def timers(self, now: float) -> None:
        beats = self.beats
        interval = self.plan.heartbeat_interval
        while beats and beats[0][0] <= now:
            _, conn = beats.popleft()
            if conn.state != READY:
                continue
            try:
                conn.sock.send(self.heartbeat)
            except OSError:
                continue
            self.counters.heartbeats += 1
            beats.append((now + interval, conn))
        endings = self.endings
        while endings and endings[0][0] <= now:
            _, _, kind, conn = heapq.heappop(endings)
            if kind == LIFETIME_DUE:
                if conn.state == READY:
                    self.finish(conn)
            elif conn.state not in (READY, CLOSED):
                self.fail(conn, "handshake timeout")

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "ready": self.ready,
            "peakReady": c.peak_ready,
            "opened": c.opened,
            "completed": c.completed,
            "failed": dict(self.failed),
            "closes": dict(c.closes),
            "frames": c.frames,
            "staleFrames": c.stale_frames,
            "bytes": c.bytes,
            "controlFrames": c.control_frames,
            "resyncs": c.resyncs,
            "hist": dict(c.hist),
            "maxLatency": c.max_latency,
            "firstAt": c.first_at,
            "lastAt": c.last_at,
            "cpuSeconds": time.process_time() - c.cpu0,
            "wallSeconds": time.perf_counter() - c.wall0,
            "heartbeats": c.heartbeats,
            "connectMs": c.connect_ms,
        }

    def maybe_report_ready(self) -> None:
        if self.reported_ready or self.started < self.plan.connections:
            return
        if len(self.by_fd) > self.ready:
            return  # handshakes in flight
        self.reported_ready = True
        self.pipe.send(("ready", {"ready": self.ready, "failed": dict(self.failed),
                                  "seconds": round(time.monotonic() - self.t0, 3),
                                  "connectMs": list(self.counters.connect_ms)}))

    def loop(self) -> None:
        pipe_fd = self.pipe.fileno()
        self.poller.register(pipe_fd, select.EPOLLIN)
        view, buf = self.view, self.buf
        by_fd = self.by_fd
        counters = self.counters
        timed = self.plan.heartbeat_interval > 0 or self.plan.lifetime > 0 \
            or self.plan.handshake_timeout > 0
        while True:
            if self.started < self.plan.connections:
                self.open_more()
                timeout = 0.005
            else:
                timeout = 0.1 if timed else 1.0
            events = self.poller.poll(timeout)
            now = time.time()
            for fd, _ in events:
                if fd == pipe_fd:
                    command = self.pipe.recv()
                    if command[0] == "exit":
                        return
                    if command[0] == "stats":
                        self.pipe.send(("stats", self.stats()))
                        if command[1]:
                            self.counters = counters = _Counters()
                        if command[2]:
                            self.phase = ord(command[2])
                    continue
                conn = by_fd.get(fd)
                if conn is None:
                    continue
                try:
                    n = conn.sock.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.fail(conn, f"recv: {exc.strerror or exc}")
                    continue
                if n == 0:
                    self.fail(conn, "eof")
                    continue
                counters.bytes += n
                if conn.state == READY:
                    self.on_data(conn, bytes(view[:n]), now)
                else:
                    self.handshake_data(conn, bytes(view[:n]))
            if timed:
                self.timers(time.monotonic())
            if not self.reported_ready:
                self.maybe_report_ready()

    def close_all(self) -> None:
        for conn in list(self.by_fd.values()):
            with contextlib.suppress(OSError):
                conn.sock.close()
        self.by_fd.clear()


def client_main(plan: ClientPlan, pipe: Pipe) -> None:
    raise_fd_limit(plan.connections + 1024)
    pin_self(plan.cpus)
    client = _ClientProcess(plan, pipe)
    try:
        client.loop()
    finally:
        client.close_all()


class LoadClients:
    """K client processes holding `connections` sockets between them."""

    def __init__(self, plan: ClientPlan, processes: int) -> None:
        self.plan = plan
        processes = max(1, min(processes, plan.connections))
        self.pipes: list[Pipe] = []
        self.procs: list[mp.process.BaseProcess] = []
        ctx = mp.get_context("spawn")
        share, extra = divmod(plan.connections, processes)
        values = {f.name: getattr(plan, f.name) for f in fields(plan)}
        first = 0
        for i in range(processes):
            values["connections"] = count = share + (1 if i < extra else 0)
            if plan.tokens:
                values["tokens"] = plan.tokens[first:first + count]
            first += count
            values["connect_rate"] = plan.connect_rate / processes
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(ClientPlan(**values), child),
                               daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.connect_report: dict[str, Any] = {}
        self._ready: list[dict[str, Any] | None] = [None] * processes

    def _receive(self, index: int, kind: str, timeout: float) -> dict[str, Any]:
        pipe = self.pipes[index]
        deadline = time.monotonic() + timeout
        while True:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"load client {index} did not send {kind}")
            tag, body = pipe.recv()
            if tag == "ready":
                self._ready[index] = body
            if tag == kind:
                return dict(body)

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        ready = 0
        failed: Counter[str] = Counter()
        seconds = 0.0
        connect_ms: list[float] = []
        for i in range(len(self.pipes)):
            report = self._ready[i] or self._receive(i, "ready", timeout)
            ready += report["ready"]
            failed.update(report["failed"])
            seconds = max(seconds, report["seconds"])
            connect_ms += report["connectMs"]
        self.connect_report = {"ready": ready, "failed": dict(failed), "seconds": seconds,
                               "connectMs": percentiles(connect_ms)}
        return self.connect_report

    def stats(self, reset: bool = False, phase: str = "") -> dict[str, Any]:
        """Merged counters; `reset` starts a new window, `phase` (one character) makes
        only frames of that writer phase count from now on."""
        for pipe in self.pipes:
            pipe.send(("stats", reset, phase))
        sums = ("ready", "peakReady", "opened", "completed", "frames", "staleFrames", "bytes",
                "controlFrames", "resyncs", "cpuSeconds", "heartbeats")
        merged: dict[str, Any] = dict.fromkeys(sums, 0)
        merged.update({"wallSeconds": 0.0, "maxLatency": 0.0, "firstAt": 0.0, "lastAt": 0.0})
        hist: Counter[int] = Counter()
        closes: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        connect_ms: list[float] = []
        for i in range(len(self.pipes)):
            s = self._receive(i, "stats", 30)
            for key in sums:
                merged[key] += s[key]
            merged["wallSeconds"] = max(merged["wallSeconds"], s["wallSeconds"])
            merged["maxLatency"] = max(merged["maxLatency"], s["maxLatency"])
            if s["firstAt"]:
                merged["firstAt"] = min(merged["firstAt"] or s["firstAt"], s["firstAt"])
            merged["lastAt"] = max(merged["lastAt"], s["lastAt"])
            hist.update({int(k): v for k, v in s["hist"].items()})
            closes.update(s["closes"])
            failed.update(s["failed"])
            connect_ms += s["connectMs"]
        merged["hist"] = hist
        merged["closes"] = dict(closes)
        merged["failed"] = dict(failed)
        merged["latencyMs"] = histogram_percentiles(hist, merged["maxLatency"])
        merged["connectMs"] = percentiles(connect_ms)
        return merged

    def frames(self) -> int:
        return int(self.stats()["frames"])

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("exit",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def __enter__(self) -> LoadClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(values_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2),
            "count": len(ordered)}
