"""Sockets that have not logged in have a quota of their own (WEBSOCKET_PRELOGIN_SHARE of
MAX_CONCURRENT_CONNECTIONS, and WEBSOCKET_PRELOGIN_PER_ADDRESS per client address), on top
of the logged-in users' MAX_CONCURRENT_CONNECTIONS: upgraded sockets that never send
`connect` can never take a logged-in user's slot, and the node counts them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
import trio_websocket

from sinal.node.wiring import Node
from sinal.protocol import Encoding
from tests.realtime.edge_support import running_node, wait_until
from tests.realtime.realtime_support import Client, token_for


@asynccontextmanager
async def socket_from(node: Node, source: str) -> AsyncIterator[Client]:
    """A WebSocket to the node from the loopback address `source` (127.0.0.x)."""
    port = int(node.websocket_url.rsplit(":", 1)[1].split("/")[0])
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, trio.SocketStream(sock), "127.0.0.1", "/ws",
            subprotocols=[Encoding.MSGPACK.subprotocol], message_queue_size=1000)
        try:
            yield Client(ws, Encoding.MSGPACK)
        finally:
            await ws.aclose()


async def refused_status(node: Node, source: str) -> int:
    """The HTTP status of a refused upgrade (the rejection surfaces from the client's
    reader task, inside its nursery's exception group)."""
    try:
        async with socket_from(node, source):
            pass
    except BaseException as error:  # noqa: BLE001 - the group is searched below
        rejected = [e for e in _leaves(error) if isinstance(e, trio_websocket.ConnectionRejected)]
        if not rejected:
            raise
        return rejected[0].status_code
    raise AssertionError("the upgrade was accepted")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def test_sockets_waiting_to_log_in_never_take_logged_in_slots(
        db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> None:
    async with running_node(db_url, nursery, MAX_CONCURRENT_CONNECTIONS="3",
                            WEBSOCKET_PRELOGIN_SHARE="100",
                            WEBSOCKET_PRELOGIN_PER_ADDRESS="2") as node:
        hub = node.hub
        assert hub is not None
        async with socket_from(node, "127.0.0.1"), socket_from(node, "127.0.0.1"):
            await wait_until(lambda: hub.pending == 2)
            assert await refused_status(node, "127.0.0.1") == 429  # the per-address cap
            assert hub.describe()["pending"] == 2 and hub.active_connections == 0
            async with httpx.AsyncClient(base_url=node.http_url) as http:
                health = (await http.get("/health/realtime")).json()
                metrics = (await http.get("/metrics")).text
            assert health["websocketPending"] == 2 and health["websocketConnections"] == 0
            assert "sinal_websocket_pending 2.0" in metrics
            # Every logged-in slot is still there for users from elsewhere.
            async with socket_from(node, "127.0.0.2") as a:
                await a.connect(token_for(users["ana@sinal.dev"]))
                async with socket_from(node, "127.0.0.2") as b:
                    await b.connect(token_for(users["bruno@sinal.dev"]))
                    async with socket_from(node, "127.0.0.3") as c:
                        await c.connect(token_for(users["carla@sinal.dev"]))
                        assert hub.active_connections == 3 and hub.pending == 2
                        # MAX_CONCURRENT_CONNECTIONS users are in: the next one waits
                        assert await refused_status(node, "127.0.0.4") == 503
                        await c.subscribe("purchase_request_changed")  # served all along
        await wait_until(lambda: hub.pending == 0 and not hub.pending_by_address)
        assert hub.refused_pending == 1
