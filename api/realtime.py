"""What the HTTP side may know of the realtime side: memory only, never a query.

The HTTP app is given one `RealtimeView` (the composition root, node/http.py, implements it
over the running node); it never sees actors, the hub or the node itself. Everything here
is read from memory, so a 304, a health check or a scrape costs no query.

- Topic positions (`TopicPositions`): a topic's *version* -- the position of its last
  published change, or the floor of its replay ring when it has published none; ETags are
  made from it -- and its *head* -- the log position up to which it has published
  everything (it moves with other topics' changes too) -- and a way to wait for the head.
  The commit fence and the ETags of fresh reads use these (api/freshness.py).
- The node as operators see it: connections (/api/metrics/realtime, /health/realtime),
  readiness and the listener (/health/ready), uptime and the WebSocket URL (`/`), the
  supervisor tree (/api/supervisor), and the realtime side's Prometheus collectors
  (/metrics).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.registry import Collector

from sinal.domain.aggregates import DashboardSource


class TopicPositions(Protocol):
    def topic_version(self, topic: str) -> int:
        """The position of the topic's last published change (or its ring floor)."""
        ...

    def topic_head(self, topic: str) -> int:
        """The log position up to which the topic has published every change."""
        ...

    async def wait_head(self, topic: str, position: int) -> None:
        """Return once the topic has published everything up to `position`."""
        ...


class RealtimeView(TopicPositions, Protocol):
    def ready(self) -> bool:
        """The node serves (its supervisor tree has started)."""
        ...

    async def broadcast(self, message: str, level: str, roles: frozenset[str] | None
                        ) -> dict[str, Any]:
        """Send an administrator's broadcast to every connected user of the cluster (of
        `roles`, when given): `{id, level, timestamp, scope, processes, sockets}`, scope
        "cluster" (over Redis) or "node" (this process only)."""
        ...

    def draining(self) -> bool:
        """A graceful stop has begun (SIGTERM): readiness is false until the node stops."""
        ...

    def listening(self) -> bool:
        """The listener holds its connection to PostgreSQL (LISTEN)."""
        ...

    def active_connections(self) -> int:
        """Open WebSocket sessions on this node."""
        ...

    def pending_connections(self) -> int:
        """WebSocket sockets upgraded on this node that have not logged in yet."""
        ...

    def cluster_connections(self) -> int:
        """Open WebSocket sessions on every node and worker (the Redis registry; this
        node's own count when there is no Redis)."""
        ...

    def cluster_state(self) -> str:
        """Cluster state in Redis: "ok", "degraded" (configured, not answering: local
        budgets meanwhile) or "none" (no Redis configured)."""
        ...

    def listener_status(self) -> dict[str, Any] | None:
        """The listener's own description (position, lag, ...), None before it exists."""
        ...

    def uptime(self) -> float:
        """Seconds since the node started."""
        ...

    def websocket_url(self) -> str:
        """Where the node's WebSocket endpoint listens ("" until it does)."""
        ...

    def dashboard(self) -> DashboardSource:
        """The dashboard's figures as the aggregates actor keeps them (read-only)."""
        ...

    def status_tree(self) -> dict[str, Any]:
        """The supervisor tree, the hub, the listener and the cluster (GET /api/supervisor)."""
        ...

    def collectors(self) -> Iterable[Collector]:
        """Prometheus collectors of the realtime side, read at scrape time."""
        ...
