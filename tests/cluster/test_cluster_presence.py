"""The Redis session registry: nodes publish themselves and the users they hold; every node
sees the cluster's connection count; a node that stops disappears. Real Redis."""

from __future__ import annotations

from typing import Any

import trio

from sinal.actors.cluster import ClusterPresence
from sinal.actors.hub import Hub
from sinal.actors.settings import RealtimeSettings
from sinal.engine.registry import Registry


class FakeConnection:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id


def hub_with(node_id: str, *users: str) -> Hub:
    hub = Hub(RealtimeSettings(), db=None, node_id=node_id,  # type: ignore[arg-type]
              authenticator=None, topics={}, registry=Registry())  # type: ignore[arg-type]
    for user in users:
        hub.register(FakeConnection(user))  # type: ignore[arg-type]
    return hub


async def test_two_nodes_see_each_other_and_where_users_are(
        redis_url: str, redis_prefix: str, nursery: trio.Nursery) -> None:
    a = ClusterPresence(hub_with("node-a", "u1", "u1", "u2"), redis_url, prefix=redis_prefix,
                        interval=5, describe=lambda: {"http": "http://a"})
    b = ClusterPresence(hub_with("node-b", "u2"), redis_url, prefix=redis_prefix, interval=5)
    await nursery.start(a.run)
    await nursery.start(b.run)
    with trio.fail_after(10):
        await a.wait_published(1)
        await b.wait_published(1)
        await a.publish_once()  # a's view now includes b
    assert set(a.last_view) == {"node-a", "node-b"}
    assert a.last_view["node-a"]["connections"] == "3"
    assert a.last_view["node-a"]["http"] == "http://a"
    assert a.cluster_connections() == 4
    assert sorted(await trio.to_thread.run_sync(a.nodes_of_user_sync, "u2")) == [
        "node-a", "node-b"]
    assert await trio.to_thread.run_sync(a.nodes_of_user_sync, "u1") == ["node-a"]
    assert await trio.to_thread.run_sync(a.nodes_of_user_sync, "nobody") == []


async def test_a_stopped_node_leaves_the_registry(
        redis_url: str, redis_prefix: str) -> None:
    a = ClusterPresence(hub_with("node-a"), redis_url, prefix=redis_prefix, interval=5)
    b = ClusterPresence(hub_with("node-b", "u9"), redis_url, prefix=redis_prefix, interval=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        with trio.fail_after(10):
            await b.wait_published(1)
        nursery.cancel_scope.cancel()  # b stops: it removes its key on the way out
    view: dict[str, Any] = await trio.to_thread.run_sync(a.view_sync)
    assert "node-b" not in view


async def test_redis_away_fails_the_start_clearly() -> None:
    import redis

    from sinal.node.embedded import free_port

    dead = ClusterPresence(hub_with("node-x"), f"redis://127.0.0.1:{free_port()}/0")
    with trio.fail_after(10):
        try:
            await dead.run()
        except redis.ConnectionError:
            pass
        else:  # pragma: no cover - run never returns normally
            raise AssertionError("run should fail when Redis is away")


async def test_a_node_with_redis_publishes_itself(
        db_url: str, redis_url: str, redis_prefix: str, nursery: trio.Nursery) -> None:
    from sinal.node.wiring import Node
    from tests.realtime.realtime_support import node_config, users_of

    users_of(db_url)
    config = node_config(db_url, REDIS_URL=redis_url, SINAL_REDIS_PREFIX=redis_prefix,
                         SINAL_NODE_ID="node-r")
    node: Node = await nursery.start(Node(config, db_url).run)
    assert node.cluster is not None
    with trio.fail_after(10):
        await node.cluster.wait_published(1)
    view = await trio.to_thread.run_sync(node.cluster.view_sync)
    assert view["node-r"]["http"] == node.http_url
    assert node.status_tree()["cluster"]["connections"] == 0
