"""Helpers for the hostile and timing edge cases of the realtime path.

Two kinds of harness:

* real sockets against a running node (`client()` of realtime_support): `read_until_closed`
  collects what a client gets up to the server's close, `assert_refused` checks the
  documented error frame and close code, and a `Watcher` (an admin subscribed to
  `supplier_changed`) proves the node still serves everyone else;
* a `ConnectionActor` driven over `trio.testing.memory_stream_pair()` (`memory_session`),
  with a real `Hub` and a stand-in database, for tests in virtual time (`autojump_clock`):
  no thread and no kernel work, so the clock only jumps when every task waits on a timer.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import trio
import trio.testing
import trio_websocket
from wsproto.connection import Connection as WsprotoConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from sinal.actors.connection import ConnectionActor
from sinal.actors.hub import Hub
from sinal.actors.topic import Topic
from sinal.domain.catalogue import LOG_TOPICS
from sinal.domain.db import Database
from sinal.domain.principals import Authenticator
from sinal.engine.registry import Registry
from sinal.node.config import Config, load_config
from sinal.node.settings import realtime_settings
from sinal.node.wiring import Node
from sinal.protocol import (
    ERRORS,
    ClientMessage,
    DataUpdate,
    Encoding,
    Error,
    ErrorCode,
    Heartbeat,
    ServerMessage,
    decode_server,
    encode_client,
)
from sinal.websocket import WebSocketConnection, run_websocket
from tests.realtime.realtime_support import SECRET, Client, client, node_config, token_for

GUARD = 10.0  # seconds: fail_after guard of real-socket waits

# --------------------------------------------------------------------------- real sockets


@dataclass
class Closed:
    """What a client received before the server closed, and the close frame's code/reason."""

    messages: list[ServerMessage]
    code: int
    reason: str

    @property
    def errors(self) -> list[Error]:
        return [m for m in self.messages if isinstance(m, Error)]


async def read_until_closed(c: Client) -> Closed:
    """Every non-heartbeat message up to the close; fails if the server does not close."""
    messages: list[ServerMessage] = []
    with trio.fail_after(GUARD):
        while True:
            try:
                raw = await c.ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                assert reason is not None
                return Closed(messages, reason.code, reason.reason or "")
            message = decode_server(raw, c.encoding)
            if not isinstance(message, Heartbeat):
                messages.append(message)


def assert_refused(closed: Closed, code: ErrorCode, ref: object = None) -> Error:
    """The documented answer to an error that closes: one `error` frame, then the close."""
    assert closed.errors, f"no error frame before the close ({closed.code}): {closed.messages}"
    error = closed.errors[-1]
    assert error.code == code.value, error
    assert error.ref == ref, error
    assert len(closed.errors) == 1, closed.errors
    assert closed.code == ERRORS[code].close_code, (closed.code, closed.reason)
    assert closed.reason == code.value
    return error


async def expect_error(c: Client, code: ErrorCode, ref: object = None) -> Error:
    """An `error` frame that keeps the connection open (its ref echoed)."""
    error = await c.expect(Error, timeout=GUARD)
    assert error.code == code.value, error
    assert error.ref == ref, error
    assert not ERRORS[code].closes
    return cast(Error, error)


def insert_supplier(db_url: str, name: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (name,))


class Watcher:
    """An admin connected before the trouble starts, subscribed to `supplier_changed`."""

    def __init__(self, c: Client, db_url: str) -> None:
        self.client = c
        self.db_url = db_url
        self._probes = itertools.count(1)

    async def still_served(self) -> None:
        """A commit made now reaches the watcher (the node keeps serving everyone else)."""
        name = f"probe-{next(self._probes)}"
        await trio.to_thread.run_sync(insert_supplier, self.db_url, name)
        with trio.fail_after(GUARD):
            while True:  # the test's own commits may come first
                update = await self.client.expect(DataUpdate)
                assert update.topic == "supplier_changed", update
                if update.data["name"] == name:
                    return


@asynccontextmanager
async def watching(node: Node, users: dict[str, Any], db_url: str) -> AsyncIterator[Watcher]:
    async with client(node) as c:
        await c.connect(token_for(users["admin@sinal.dev"]))
        await c.subscribe("supplier_changed")
        watcher = Watcher(c, db_url)
        await watcher.still_served()
        yield watcher


@asynccontextmanager
async def running_node(db_url: str, nursery: trio.Nursery,
                       **overrides: str) -> AsyncIterator[Node]:
    """A node with settings overridden (the `node` fixture has the defaults)."""
    node: Node = await nursery.start(Node(node_config(db_url, **overrides), db_url).run)
    yield node


@asynccontextmanager
async def upgrade(node: Node, *, path: str = "/ws", subprotocols: list[str] | None = None,
                  origin: str | None = None) -> AsyncIterator[Client]:
    """Open a WebSocket with a chosen path, subprotocol offer and Origin header.

    A refused upgrade raises trio_websocket.ConnectionRejected (its `status_code`).
    """
    url = node.websocket_url.rsplit("/", 1)[0] + path
    offered = [Encoding.MSGPACK.subprotocol] if subprotocols is None else subprotocols
    headers = [(b"Origin", origin.encode())] if origin is not None else None
    async with trio_websocket.open_websocket_url(
            url, subprotocols=offered, extra_headers=headers) as ws:
        encoding = Encoding(ws.subprotocol) if ws.subprotocol else Encoding.MSGPACK
        yield Client(ws, encoding)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let the node run until `condition` holds (for state no message reports, such as a
    pool slot freed after a close). Checkpoints only; the guard fails a hang."""
    with trio.fail_after(GUARD):
        while not condition():
            await trio.lowlevel.checkpoint()


# --------------------------------------------------------------------------- virtual time


def edge_config(**overrides: str) -> Config:
    env = {"JWT_SECRET": SECRET, "LOG_LEVEL": "warning", "HTTP_PORT": "0",
           "WEBSOCKET_PORT": "0", **overrides}
    return load_config(env, env_file=None)


class _Rows:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def fetchone(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[dict[str, Any]]:
        return list(self.rows)


class _StubConnection:
    """Answers the queries of a session: its start (the user, no kept notifications, head
    0) and a user lookup (a recheck)."""

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users

    def transaction(self) -> nullcontext[None]:
        return nullcontext()

    def execute(self, sql: str, params: Any = ()) -> _Rows:
        if "taken AS" in sql:  # domain.principals.load_sessions
            known = [self.users[u] for u in params["users"] if u in self.users]
            return _Rows([{"user_id": user["id"], "role": user["role"],
                           "is_active": user["is_active"], "dept": user["dept"],
                           "head": 0, "id": None} for user in known]
                         or [{"user_id": None, "head": 0, "id": None}])
        if "FROM users" in sql:
            row = self.users.get(str(params[0]))
            return _Rows([dict(row)] if row else [])
        if "notifications" in sql:
            return _Rows([])
        raise AssertionError(f"unexpected query in a virtual-time test: {sql}")


@dataclass
class StubDatabase:
    """Stands in for `hub.db`: `run(work)` calls `work` on a fake connection, no thread."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: int = 0

    async def run(self, work: Callable[[Any], Any]) -> Any:
        self.queries += 1
        await trio.lowlevel.checkpoint()
        return work(_StubConnection(self.users))


USER: dict[str, Any] = {"id": "7d0c1a52-0000-4000-8000-000000000001", "role": "admin",
                        "is_active": True, "dept": None}


def stub_hub(config: Config, *users: dict[str, Any]) -> Hub:
    db = cast(Database, StubDatabase({u["id"]: u for u in (users or (USER,))}))
    registry = Registry()
    topics = {name: Topic(name, registry=registry) for name in LOG_TOPICS}
    return Hub(realtime_settings(config), db, "edge-test",
               Authenticator(db, config.jwt_secret, lambda: 0), topics, registry=registry)


class MemoryClosed(Exception):
    def __init__(self, code: int, reason: str, at: float) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.at = at


class MemoryClient:
    """A minimal WebSocket client (wsproto) on the client end of a memory stream."""

    def __init__(self, stream: trio.abc.Stream, encoding: Encoding) -> None:
        self.stream = stream
        self.encoding = encoding
        self.protocol = WsprotoConnection(ConnectionType.CLIENT)
        self.messages: deque[tuple[float, ServerMessage]] = deque()
        self.pongs = 0
        self.closed: MemoryClosed | None = None
        self._parts: list[bytes | str] = []

    async def send(self, message: ClientMessage) -> None:
        data = encode_client(message, self.encoding)
        event = BytesMessage(data) if self.encoding.binary else TextMessage(data.decode())
        await self.stream.send_all(self.protocol.send(event))

    async def ping(self) -> None:
        await self.stream.send_all(self.protocol.send(Ping(b"are you there")))

    async def receive(self) -> tuple[float, ServerMessage]:
        """The next server message and the (virtual) time it arrived; MemoryClosed at close."""
        while not self.messages:
            if self.closed is not None:
                raise self.closed
            data = await self.stream.receive_some(65536)
            now = trio.current_time()
            if not data:
                self.closed = self.closed or MemoryClosed(1006, "stream ended", now)
                raise self.closed
            self.protocol.receive_data(bytes(data))
            for event in self.protocol.events():
                if isinstance(event, BytesMessage | TextMessage):
                    data_part = event.data if isinstance(event, TextMessage) else bytes(event.data)
                    self._parts.append(data_part)
                    if event.message_finished:
                        whole: bytes | str = (
                            "".join(cast(list[str], self._parts)) if isinstance(data_part, str)
                            else b"".join(cast(list[bytes], self._parts)))
                        self._parts = []
                        self.messages.append((now, decode_server(whole, self.encoding)))
                elif isinstance(event, Pong):
                    self.pongs += 1
                elif isinstance(event, CloseConnection):
                    if self.protocol.state is ConnectionState.REMOTE_CLOSING:
                        await self.stream.send_all(self.protocol.send(event.response()))
                    self.closed = MemoryClosed(event.code, event.reason or "", now)
        return self.messages.popleft()

    async def receive_until_closed(self) -> tuple[list[tuple[float, ServerMessage]],
                                                  MemoryClosed]:
        got: list[tuple[float, ServerMessage]] = []
        while True:
            try:
                got.append(await self.receive())
            except MemoryClosed as closed:
                return got, closed


@asynccontextmanager
async def memory_session(hub: Hub, encoding: Encoding = Encoding.MSGPACK
                         ) -> AsyncIterator[tuple[MemoryClient, ConnectionActor]]:
    """A ConnectionActor serving one memory stream (as the node's server runs it)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server_stream, subprotocol=encoding.subprotocol)
    actor = ConnectionActor(ws, hub, encoding)

    async def handler(_: WebSocketConnection) -> None:
        await actor.run()

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.heartbeats.run)  # as the node's tree runs it
        for topic in hub.topics.values():
            if not topic.running:
                await nursery.start(topic.run)
        nursery.start_soon(run_websocket, ws, handler)
        yield MemoryClient(client_stream, encoding), actor
        nursery.cancel_scope.cancel()
