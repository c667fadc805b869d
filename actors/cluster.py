"""ClusterPresence actor: the node's entry in the Redis session registry.

With REDIS_URL (or REDIS_HOST/...), every node publishes, every `interval` seconds, a hash
`<prefix>node:<node_id>` (connections, users, listener position, URLs, start time) that
expires after three intervals, and the set `<prefix>user:<user_id>` of nodes holding
that user's sockets (same expiry). Any node can then answer "how many connections does
the cluster hold" and "where is this user connected" without asking the others. Without
Redis the node runs alone and the cluster view is just itself.

Redis calls are few (one pipeline per interval) and run in a worker thread with the
synchronous redis-py client, so the actor never blocks the event loop. When Redis is
away the actor fails, and its patient supervisor restarts it with backoff; sockets and
topics are unaffected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from sinal.actors.hub import Hub
from sinal.engine.periodic import PeriodicActor

log = logging.getLogger("sinal.cluster")


class ClusterPresence(PeriodicActor):
    kind = "cluster_presence"

    def __init__(self, hub: Hub, redis_url: str, *, prefix: str = "sinal:",
                 interval: float = 5.0, describe: Callable[[], dict[str, Any]] | None = None
                 ) -> None:
        import redis

        super().__init__("cluster_presence", interval, first_after=0, registry=hub.registry)
        self.hub = hub
        self.prefix = prefix
        self.ttl = max(1, int(interval * 3))
        self.describe_node = describe or (lambda: {})
        self.client: Any = redis.Redis.from_url(redis_url, socket_timeout=5,
                                           socket_connect_timeout=5)
        self.published = 0
        self.healthy = False  # the last publish reached Redis
        self.last_view: dict[str, dict[str, str]] = {}
        self._published_lot = trio.lowlevel.ParkingLot()

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def publish_sync(self, fields: dict[str, str], users: list[str]) -> None:
        node = self.hub.node_id
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._node_key(node), mapping=fields)
        pipe.expire(self._node_key(node), self.ttl)
        pipe.zadd(f"{self.prefix}nodes", {node: now})
        pipe.zremrangebyscore(f"{self.prefix}nodes", "-inf", now - self.ttl)
        for user in users:
            pipe.zadd(f"{self.prefix}user:{user}", {node: now})
            pipe.expire(f"{self.prefix}user:{user}", self.ttl)
        pipe.execute()

    def view_sync(self) -> dict[str, dict[str, str]]:
        """Every live node's published fields."""
        now = time.time()
        nodes = self.client.zrangebyscore(f"{self.prefix}nodes", now - self.ttl, "+inf")
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.hgetall(self._node_key(node.decode()))
        out: dict[str, dict[str, str]] = {}
        for node, fields in zip(nodes, pipe.execute(), strict=True):
            if fields:
                out[node.decode()] = {k.decode(): v.decode() for k, v in fields.items()}
        return out

    def nodes_of_user_sync(self, user_id: str) -> list[str]:
        now = time.time()
        return [n.decode() for n in self.client.zrangebyscore(
            f"{self.prefix}user:{user_id}", now - self.ttl, "+inf")]

    async def publish_once(self) -> None:
        fields = {
            "connections": str(self.hub.active_connections),
            "users": str(len(self.hub.connections_by_user)),
            "updated": f"{time.time():.3f}",
            **{k: str(v) for k, v in self.describe_node().items()},
        }
        users = list(self.hub.connections_by_user)
        await trio.to_thread.run_sync(self.publish_sync, fields, users)
        self.last_view = await trio.to_thread.run_sync(self.view_sync)
        self.published += 1
        self._published_lot.unpark_all()

    async def wait_published(self, count: int) -> None:
        while self.published < count:
            await self._published_lot.park()

    def cluster_connections(self) -> int:
        view = self.last_view or {self.hub.node_id: {"connections": "0"}}
        total = sum(int(f.get("connections", "0")) for n, f in view.items()
                    if n != self.hub.node_id)
        return total + self.hub.active_connections

    async def on_start(self) -> None:
        try:
            await trio.to_thread.run_sync(self.client.ping)  # fail the start if Redis is away
        except Exception:
            self.healthy = False
            raise

    async def tick(self) -> None:
        try:
            await self.publish_once()
        except Exception:
            self.healthy = False
            raise
        self.healthy = True

    async def main(self) -> None:
        try:
            await super().main()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await trio.to_thread.run_sync(
                        self.client.delete, self._node_key(self.hub.node_id))
                except Exception as exc:  # leaving is best effort: the key expires anyway
                    log.debug("could not remove the node key: %s", exc)
