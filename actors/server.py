"""The WebSocket endpoint of a node: `ws://host:WEBSOCKET_PORT/ws`.

Before the 101 the handshake checks the path, the Origin (WEBSOCKET_CORS_ORIGIN; clients
that send no Origin, i.e. non-browsers, pass) and the subprotocol (sinal.msgpack.v1 by
default, sinal.json.v1 on request), and refuses with HTTP 503 when MAX_CONCURRENT_CONNECTIONS
users are logged in or the pre-login quota is taken, 429 when one address already has
WEBSOCKET_PRELOGIN_PER_ADDRESS sockets waiting to log in. Each accepted socket runs a
ConnectionActor as a temporary child of the `connections` pool, in the task the server
gave it; the actor checks the quota again, strictly, before it waits for `connect`.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from sinal.actors.connection import ConnectionActor
from sinal.actors.hub import Hub
from sinal.engine.dynamic import DynamicSupervisor, PoolFull, PoolNotRunning
from sinal.protocol import ERRORS, Encoding, ErrorCode, choose_subprotocol
from sinal.websocket import (
    ConnectionLimits,
    Refuse,
    UpgradeRequest,
    WebSocketConnection,
    listener_port,
    serve_websockets,
)

log = logging.getLogger("sinal.server")

WS_PATH = "/ws"


def connection_pool(hub: Hub) -> DynamicSupervisor:
    """MAX_CONCURRENT_CONNECTIONS logged-in sockets, plus the pre-login quota: a socket that
    has not logged in can never take a logged-in user's slot."""
    settings = hub.settings
    return DynamicSupervisor(
        "connections", ConnectionActor.run, child_kind="connection",
        max_children=settings.max_connections + settings.prelogin_max, shutdown=2.0,
    )


class WebSocketServer:
    kind = "websocket_server"
    name = "websocket"

    def __init__(self, hub: Hub, pool: DynamicSupervisor, *, host: str, port: int,
                 limits: ConnectionLimits | None = None, reuse_port: bool = False) -> None:
        self.hub = hub
        self.reuse_port = reuse_port
        self.pool = pool
        self.host = host
        self.port = port
        self.limits = limits or ConnectionLimits()
        self.origins = hub.settings.allowed_origins
        self.bound_port = 0

    def _choose(self, request: UpgradeRequest) -> str | None:
        encoding = choose_subprotocol(request.subprotocols)
        if encoding is None:
            raise Refuse(400, "unsupported subprotocol: offer sinal.msgpack.v1 or sinal.json.v1")
        return encoding.subprotocol if request.subprotocols else None

    async def _admit(self, request: UpgradeRequest) -> None:
        if request.path != WS_PATH:
            raise Refuse(404, f"the WebSocket endpoint is {WS_PATH}")
        origin = request.header("origin")
        if origin and self.origins is not None and origin.rstrip("/") not in self.origins:
            raise Refuse(403, "origin not allowed (WEBSOCKET_CORS_ORIGIN)")
        hub = self.hub
        if hub.active_connections >= hub.settings.max_connections:
            hub.refused_total += 1
            raise Refuse(503, "pool_full: MAX_CONCURRENT_CONNECTIONS reached",
                         headers=[("Retry-After", "5")])
        address = hub.client_address(request)
        refusal = hub.pending_refusal(address)
        if refusal is not None:
            hub.refused_pending += 1
            status = 503 if hub.pending >= hub.settings.prelogin_max else 429
            raise Refuse(status, f"pool_full: {refusal}", headers=[("Retry-After", "5")])

    async def _handle(self, ws: WebSocketConnection) -> None:
        encoding = Encoding(ws.subprotocol) if ws.subprotocol else Encoding.MSGPACK
        actor = ConnectionActor(ws, self.hub, encoding)
        try:
            await self.pool.run_child(actor)
        except (PoolFull, PoolNotRunning):
            self.hub.refused_total += 1
            await ws.close(ERRORS[ErrorCode.POOL_FULL].close_code, "pool_full")

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                lambda task_status: serve_websockets(
                    self._handle, host=self.host, port=self.port,
                    select_subprotocol=self._choose, admit=self._admit, limits=self.limits,
                    reuse_port=self.reuse_port,
                    handler_nursery=nursery, task_status=task_status,
                )
            )
            self.bound_port = listener_port(listeners)
            log.info("WebSocket server on ws://%s:%d%s", self.host, self.bound_port, WS_PATH)
            task_status.started(self)
