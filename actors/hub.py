"""What the realtime actors of one node share, built once by the composition root (node/)
with every part it holds -- nothing is filled in later.

Topics by name, the database, the settings, the one `Authenticator`, the per-user rate
limiter, the node's actor registry, the presence writer, the audit log, the heartbeat
scheduler, the user -> live connections index (for notifications and revocations), the
pre-login accounting (sockets that have not logged in have a quota of their own, so they
can never take logged-in users' slots) and counters.
The aggregates actor that serves the `dashboard` topic is here too (`Hub.dashboard`), for
the connections that subscribe to it.
It runs no task of its own: the actors that use it are started under the node's
supervisor tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from sinal.actors.heartbeat import HeartbeatScheduler
from sinal.actors.presence import PresenceWriter
from sinal.actors.settings import RealtimeSettings
from sinal.actors.topic import Topic
from sinal.domain.audit import AuditEvent, AuditLog
from sinal.domain.db import Database
from sinal.domain.principals import Authenticator
from sinal.domain.ratelimit import RateLimiter, client_address, trusted_networks
from sinal.engine.registry import Registry
from sinal.protocol import Broadcast, Encoding, ServerMessage, encode
from sinal.websocket import UpgradeRequest
from sinal.websocket.frames import build_frame

if TYPE_CHECKING:
    from sinal.actors.aggregates import AggregatesActor
    from sinal.actors.connection import ConnectionActor


class Hub:
    def __init__(self, settings: RealtimeSettings, db: Database, node_id: str,
                 authenticator: Authenticator, topics: Mapping[str, Topic], *,
                 registry: Registry, presence: PresenceWriter | None = None,
                 rate_limiter: RateLimiter | None = None, audit: AuditLog | None = None,
                 dashboard: AggregatesActor | None = None) -> None:
        self.settings = settings
        self.db = db
        self.node_id = node_id
        self.authenticator = authenticator
        self.topics = dict(topics)
        self.registry = registry
        self.presence = presence
        self.audit = audit
        self.dashboard = dashboard
        self.rate_limiter = rate_limiter or RateLimiter(settings.rate_limit_per_minute,
                                                        clock=trio.current_time)
        self._proxies = trusted_networks(settings.trusted_proxies)
        self.heartbeats = HeartbeatScheduler(settings.heartbeat_interval,
                                             settings.connection_timeout)
        self.connections_by_user: dict[str, set[ConnectionActor]] = {}
        self.metrics_sinks: set[ConnectionActor] = set()
        self.active_connections = 0  # logged in (welcomed)
        self.pending = 0  # upgraded, not logged in yet
        self.pending_by_address: dict[str, int] = {}
        self.connections_total = 0
        self.refused_total = 0
        self.refused_pending = 0  # refused for the pre-login quota or the per-address cap
        self.closed_by_code: dict[int, int] = {}

    # --- before login: a quota of their own -----------------------------------------------

    def client_address(self, request: UpgradeRequest | None) -> str:
        """The client's address: the peer's, or, from a trusted proxy (TRUSTED_PROXIES),
        what X-Forwarded-For says (domain/ratelimit.py, client_address)."""
        remote = request.remote if request is not None else None
        peer = remote.rsplit(":", 1)[0].strip("[]") if remote else "local"
        if request is None or not self._proxies:
            return peer
        return client_address(peer, request.header("x-forwarded-for"), self._proxies)

    def pending_refusal(self, address: str) -> str | None:
        """Why a new socket from `address` may not wait for login now (None: it may)."""
        settings = self.settings
        if self.pending >= settings.prelogin_max:
            return "too many sockets are waiting to log in"
        if self.pending_by_address.get(address, 0) >= settings.prelogin_per_address:
            return "too many sockets from this address are waiting to log in"
        return None

    def add_pending(self, address: str) -> None:
        self.pending += 1
        self.pending_by_address[address] = self.pending_by_address.get(address, 0) + 1

    def remove_pending(self, address: str) -> None:
        self.pending -= 1
        left = self.pending_by_address[address] - 1
        if left:
            self.pending_by_address[address] = left
        else:
            del self.pending_by_address[address]

    # --- logged in ----------------------------------------------------------------------

    def register(self, conn: ConnectionActor) -> None:
        self.connections_by_user.setdefault(conn.user_id, set()).add(conn)
        self.active_connections += 1
        self.connections_total += 1

    def unregister(self, conn: ConnectionActor) -> None:
        self.heartbeats.remove(conn)
        conns = self.connections_by_user.get(conn.user_id)
        if conns is not None and conn in conns:
            conns.discard(conn)
            self.active_connections -= 1
            if not conns:
                del self.connections_by_user[conn.user_id]
        self.metrics_sinks.discard(conn)

    @staticmethod
    def offer_all(message: ServerMessage, conns: Iterable[ConnectionActor]) -> int:
        """Offer one server message to every connection of `conns`, encoded and framed once
        per encoding. Best effort like any frame: a socket whose outbox is full misses it.
        Returns how many took it."""
        frames: dict[Encoding, bytes] = {}
        taken = 0
        for conn in conns:
            frame = frames.get(conn.encoding)
            if frame is None:
                frame = frames[conn.encoding] = build_frame(
                    encode(message, conn.encoding), text=not conn.encoding.binary)
            if conn.offer(frame):
                taken += 1
        return taken

    def broadcast(self, message: Broadcast, roles: frozenset[str] | None = None) -> int:
        """An administrator's broadcast to every logged-in socket of this process (only
        those of `roles` when given); how many took it."""
        return self.offer_all(message, [
            conn for conns in self.connections_by_user.values() for conn in conns
            if not conn.closing and conn.principal is not None
            and (roles is None or conn.principal.role in roles)])

    def record(self, event: AuditEvent) -> None:
        if self.audit is not None:
            self.audit.record(event)

    def note_close(self, code: int | None) -> None:
        key = code if code is not None else 1006
        self.closed_by_code[key] = self.closed_by_code.get(key, 0) + 1

    def describe(self) -> dict[str, Any]:
        return {
            "connections": self.active_connections,
            "pending": self.pending,
            "refusedPending": self.refused_pending,
            "users": len(self.connections_by_user),
            "connectionsTotal": self.connections_total,
            "refused": self.refused_total,
            "closedByCode": {str(k): v for k, v in sorted(self.closed_by_code.items())},
            "topics": {
                name: {"subscribers": t.subscribers, "head": t.head, "ring": len(t.ring),
                       "ringFloor": t.ring_floor, "framesOut": t.frames_out,
                       "lagged": t.lagged_total, "inbox": t.ref.depth}
                for name, t in self.topics.items()
            },
        }
