"""A node that stops asks every connection to stop: each client gets the documented
`server_shutdown` error and close code 4501 (docs/protocol.md), not a dropped socket."""

from __future__ import annotations

from typing import Any

import trio
import trio_websocket

from sinal.node.wiring import Node
from sinal.protocol import Error, ErrorCode
from tests.realtime.realtime_support import client, node_config, token_for


async def test_stopping_node_closes_sockets_with_server_shutdown(
        db_url: str, users: dict[str, Any]) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as outer:
            node_scope = trio.CancelScope()

            async def run_node(task_status: trio.TaskStatus[Node]) -> None:
                with node_scope:
                    await Node(node_config(db_url), db_url).run(task_status=task_status)

            node: Node = await outer.start(run_node)
            async with client(node) as c:
                await c.connect(token_for(users["ana@sinal.dev"]))
                await c.subscribe("purchase_request_changed")
                node_scope.cancel()  # the node stops (as on SIGTERM)
                error = await c.expect(Error)
                assert error.code == ErrorCode.SERVER_SHUTDOWN.value
                try:
                    await c.ws.get_message()
                except trio_websocket.ConnectionClosed as closed:
                    assert closed.reason is not None and closed.reason.code == 4501
                else:
                    raise AssertionError("the socket stayed open")
