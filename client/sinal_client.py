"""A Python client for Sinal (Trio): a local cache of resources that stays current.

    client = SinalClient("http://127.0.0.1:3000", "ws://127.0.0.1:3001/ws", token,
                         topics=["purchase_request_changed"])
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        rows = client.cache["purchase_request_changed"]   # id -> row, always current

What it does, in the order of docs/protocol.md's client checklist:
- fetches each topic's resource by REST first (every page), which gives the rows and the
  offset they reflect;
- opens the WebSocket, sends `connect`, subscribes with `since` = those offsets, applies
  every `data_update` to the cache and remembers its offset; sends heartbeats;
- on `resync`: `slow_consumer` -> subscribes again from its offset; anything else
  (`retention`, ...) -> refetches the resource by REST, then subscribes from the new offset;
- when the socket drops or cannot be opened: reconnects with exponential backoff and
  jitter, and meanwhile polls REST with `?since=<offset>` and the ETag (a 304 costs the
  server no query), so the cache keeps moving; a 410 means refetch.
Rows are replaced whole (a data_update carries the full row); deletes remove the id.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from sinal.protocol import (
    Broadcast,
    Connect,
    DataUpdate,
    Encoding,
    Heartbeat,
    Notification,
    Resync,
    Subscribe,
    Subscribed,
    Welcome,
    decode_server,
    encode_client,
)
from sinal.protocol import Error as ErrorMessage

log = logging.getLogger("sinal.client")

RESOURCE_OF_TOPIC = {
    "purchase_request_changed": "purchase-requests",
    "quotation_changed": "quotations",
    "purchase_order_changed": "purchase-orders",
    "approval_changed": "approvals",
}


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class ClientError(Exception):
    """The server refused us for good (bad token, forbidden topic): retrying will not help."""


@dataclass
class _Poll:
    etag: str | None = None


@dataclass
class SinalClient:
    http_url: str
    ws_url: str
    token: str
    topics: Iterable[str]
    encoding: Encoding = Encoding.MSGPACK
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    poll_interval: float = 5.0
    rng: Callable[[], float] = random.random
    on_change: Callable[[str, str, dict[str, Any] | None], None] | None = None
    cache: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    broadcasts: list[Broadcast] = field(default_factory=list)  # administrators' messages
    connected: bool = False
    connects: int = 0
    refetches: int = 0
    polls: int = 0

    def __post_init__(self) -> None:
        self.topics = tuple(self.topics)
        unknown = [t for t in self.topics if t not in RESOURCE_OF_TOPIC]
        if unknown:
            raise ValueError(f"no REST resource for topics {unknown}")
        self._polls = {t: _Poll() for t in self.topics}
        self._changed = trio.lowlevel.ParkingLot()

    # --- waiting on the cache --------------------------------------------------------

    async def wait_until(self, condition: Callable[[SinalClient], bool]) -> None:
        """Return once `condition(self)` holds (checked after every change)."""
        while not condition(self):
            await self._changed.park()

    def _touched(self, topic: str, row_id: str, row: dict[str, Any] | None) -> None:
        if self.on_change is not None:
            self.on_change(topic, row_id, row)
        self._changed.unpark_all()

    # --- REST ---------------------------------------------------------------------------

    def _get(self, path: str, etag: str | None = None) -> tuple[int, dict[str, Any] | None,
                                                                  str | None]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        request = urllib.request.Request(self.http_url.rstrip("/") + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response), response.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return 304, None, etag
            body = exc.read()
            if exc.code in (401, 403):
                raise ClientError(f"{path}: {exc.code} {body[:300]!r}") from exc
            return exc.code, None, None

    async def refetch(self, topic: str) -> None:
        """Replace the topic's cache with a full REST read (every page)."""
        resource = RESOURCE_OF_TOPIC[topic]
        rows: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        offset = 0
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            path = f"/api/{resource}?{urllib.parse.urlencode(query)}"
            status, body, _ = await trio.to_thread.run_sync(self._get, path)
            if status != 200 or body is None:
                raise OSError(f"GET {path} answered {status}")
            for row in body["data"]:
                rows[str(row["id"])] = row
            offset = int(body["offset"])
            cursor = body.get("nextCursor")
            if not cursor:
                break
        self.cache[topic] = rows
        self.offsets[topic] = offset
        self._polls[topic] = _Poll()
        self.refetches += 1
        self._touched(topic, "*", None)

    async def poll_once(self, topic: str) -> None:
        """One delta poll: 304 (nothing new), a delta, or 410 (refetch)."""
        resource = RESOURCE_OF_TOPIC[topic]
        poll = self._polls[topic]
        while True:
            path = f"/api/{resource}?since={self.offsets[topic]}"
            status, body, etag = await trio.to_thread.run_sync(self._get, path, poll.etag)
            self.polls += 1
            if status == 304:
                return
            if status == 410:
                await self.refetch(topic)
                return
            if status != 200 or body is None:
                raise OSError(f"GET {path} answered {status}")
            for row in body["data"]:
                operation = row.pop("_operation", "update")
                self._apply(topic, operation, str(row["id"]), row, None)
            self.offsets[topic] = int(body["offset"])
            poll.etag = etag
            if not body.get("hasMore"):
                return

    async def _poll_forever(self) -> None:
        while True:
            for topic in self.topics:
                await self.poll_once(topic)
            await trio.sleep(self.poll_interval)

    # --- applying changes -----------------------------------------------------------------

    def _apply(self, topic: str, op: str, row_id: str, row: dict[str, Any] | None,
               offset: int | None) -> None:
        rows = self.cache.setdefault(topic, {})
        if op == "delete":
            rows.pop(row_id, None)
            self._touched(topic, row_id, None)
        else:
            assert row is not None
            rows[row_id] = dict(row)
            self._touched(topic, row_id, rows[row_id])
        if offset is not None:
            self.offsets[topic] = offset

    # --- WebSocket ------------------------------------------------------------------------

    async def _send(self, ws: Any, message: Any) -> None:
        data = encode_client(message, self.encoding)
        await ws.send_message(data if self.encoding.binary else data.decode())

    async def _subscribe(self, ws: Any, topics: Iterable[str]) -> None:
        topics = tuple(topics)
        await self._send(ws, Subscribe(events=topics, since={t: self.offsets[t] for t in topics}))

    async def _session(self) -> None:
        """One WebSocket session; returns or raises when it ends."""
        async with open_websocket_url(self.ws_url, subprotocols=[self.encoding.subprotocol],
                                      message_queue_size=4096) as ws:
            await self._send(ws, Connect(token=self.token))
            welcome = decode_server(await ws.get_message(), self.encoding)
            if isinstance(welcome, ErrorMessage):
                raise ClientError(f"connect refused: {welcome.code}: {welcome.message}")
            assert isinstance(welcome, Welcome), welcome
            await self._subscribe(ws, self.topics)
            self.connected = True
            self.connects += 1
            self._changed.unpark_all()  # wait_until() conditions may look at `connected`
            interval = welcome.heartbeat_interval / 1000
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._beat, ws, interval)
                    await self._consume(ws)
                    nursery.cancel_scope.cancel()
            except* (ClientError, ConnectionClosed, OSError) as group:
                raise _first(group) from None  # one session, one reason to end it
            finally:
                self.connected = False
                self._changed.unpark_all()

    async def _beat(self, ws: Any, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            await self._send(ws, Heartbeat(timestamp=int(time.time() * 1000)))

    async def _consume(self, ws: Any) -> None:
        while True:
            message = decode_server(await ws.get_message(), self.encoding)
            if isinstance(message, DataUpdate):
                self._apply(message.topic, message.op, str(message.id), dict(message.data),
                            message.offset)
            elif isinstance(message, Resync):
                if message.reason != "slow_consumer":
                    await self.refetch(message.topic)
                await self._subscribe(ws, [message.topic])
            elif isinstance(message, Notification):
                self.notifications.append(message)
                self._changed.unpark_all()
            elif isinstance(message, Broadcast):
                self.broadcasts.append(message)
                self._changed.unpark_all()
            elif isinstance(message, ErrorMessage):
                if message.code in ("forbidden", "unknown_topic", "invalid_filter"):
                    raise ClientError(f"{message.code}: {message.message}")
                log.warning("server error %s: %s", message.code, message.message)
            elif isinstance(message, Subscribed | Heartbeat):
                pass

    # --- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[SinalClient]
                  = trio.TASK_STATUS_IGNORED) -> None:
        for topic in self.topics:
            await self.refetch(topic)
        task_status.started(self)
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except ClientError:
                raise
            except (OSError, ConnectionClosed, HandshakeError) as exc:
                log.info("websocket unavailable (%s); polling REST meanwhile", exc)
            delay = min(self.backoff_cap, self.backoff_base * 2 ** attempt)
            delay *= 0.5 + self.rng() / 2
            attempt += 1
            with trio.move_on_after(delay):
                try:
                    await self._poll_forever()
                except OSError as exc:
                    log.info("REST polling failed too (%s)", exc)
