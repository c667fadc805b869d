"""The realtime hub of a node: what connection actors share.

Topics by name, the database, settings, the per-user rate limiter, the user -> live
connections index (for notifications and preference changes) and counters. It holds no
task of its own; the actors that use it are started by engine.node under the supervisor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from sinal.actors.heartbeat import HeartbeatScheduler
from sinal.actors.topic import Topic
from sinal.domain.catalogue import LOG_TOPICS
from sinal.domain.db import Database
from sinal.domain.principals import Authenticator
from sinal.node.config import Config

if TYPE_CHECKING:
    from sinal.actors.connection import ConnectionActor
    from sinal.actors.presence import PresenceWriter


class RateLimiter:
    """Token bucket per key: `per_minute` tokens, refilled continuously.

    `clock` is injectable (trio.current_time in actors, so tests run in virtual time).
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self.clock()
        tokens, stamp = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return True
        self._buckets[key] = (tokens, now)
        return False

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        tokens, _ = self._buckets.get(key, (self.capacity, 0.0))
        return max(0.0, (cost - tokens) / self.rate)

    def forget_idle(self) -> None:
        """Drop full buckets (keeps memory bounded by active users)."""
        now = self.clock()
        for key, (tokens, stamp) in list(self._buckets.items()):
            if tokens + (now - stamp) * self.rate >= self.capacity:
                del self._buckets[key]


@dataclass
class Hub:
    config: Config
    db: Database
    node_id: str
    authenticator: Authenticator
    topics: dict[str, Topic] = field(default_factory=dict)
    connections_by_user: dict[str, set[ConnectionActor]] = field(default_factory=dict)
    metrics_sinks: set[ConnectionActor] = field(default_factory=set)
    presence: PresenceWriter | None = None
    rate_limiter: RateLimiter | None = None
    ring_size: int = 4096
    connections_total: int = 0
    refused_total: int = 0
    closed_by_code: dict[int, int] = field(default_factory=dict)
    heartbeats: HeartbeatScheduler = field(init=False)

    def __post_init__(self) -> None:
        if self.rate_limiter is None:
            self.rate_limiter = RateLimiter(self.config.rate_limit_requests_per_minute,
                                            clock=trio.current_time)
        self.heartbeats = HeartbeatScheduler(
            self.config.websocket_heartbeat_interval / 1000,
            self.config.websocket_connection_timeout / 1000)

    def make_topics(self, head: int) -> None:
        for name in LOG_TOPICS:
            if name not in self.topics:
                self.topics[name] = Topic(name, head, ring_size=self.ring_size)

    @property
    def active_connections(self) -> int:
        return sum(len(conns) for conns in self.connections_by_user.values())

    def register(self, conn: ConnectionActor) -> None:
        self.connections_by_user.setdefault(conn.user_id, set()).add(conn)
        self.connections_total += 1

    def unregister(self, conn: ConnectionActor) -> None:
        self.heartbeats.remove(conn)
        conns = self.connections_by_user.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.connections_by_user[conn.user_id]
        self.metrics_sinks.discard(conn)

    def note_close(self, code: int | None) -> None:
        key = code if code is not None else 1006
        self.closed_by_code[key] = self.closed_by_code.get(key, 0) + 1

    def describe(self) -> dict[str, Any]:
        return {
            "connections": self.active_connections,
            "users": len(self.connections_by_user),
            "connectionsTotal": self.connections_total,
            "refused": self.refused_total,
            "closedByCode": {str(k): v for k, v in sorted(self.closed_by_code.items())},
            "topics": {
                name: {"subscribers": t.subscribers, "head": t.head, "ring": len(t.ring),
                       "ringFloor": t.ring_floor, "framesOut": t.frames_out,
                       "lagged": t.lagged, "inbox": t.inbox_depth()}
                for name, t in self.topics.items()
            },
        }
