"""ClusterBus actor: the cluster's control messages over Redis pub/sub (with REDIS_URL).

It carries cluster state, never data: changes travel only through the change log. Two
kinds of message, JSON on the channel `<prefix>bus`, each with the sending process's
node id (`origin`):

* `broadcast` -- an administrator's message (POST /api/admin/broadcasts) for every
  connected user, or for some roles, on every node and worker: each process hands it to
  its own sockets as a `broadcast` frame (`Hub.broadcast`). Nothing keeps it: a user who
  is not connected when it is sent does not get it later.
* `revoke` -- a user's grants changed (deactivated, deleted, role or department; the
  session guard's rule). The first process whose session guard reads the change tells
  the others, which re-check that user's sessions at once instead of when their own
  listener reaches the change (a node catching up a backlog, or one whose listener is
  reconnecting to PostgreSQL). The change log still carries the change to every node, so
  a process that misses the message (Redis down) revokes when it reads the change;
  nothing depends on the message arriving.

Publishing is one PUBLISH in a worker thread; its answer is how many processes are
subscribed. Receiving is a subscription read in worker threads, a message at a time, so
the event loop never blocks on Redis. When Redis is away the actor fails and its patient
supervisor restarts it with backoff (the node's health says degraded meanwhile); a
broadcast sent then reaches this process's sockets only, and its answer says so.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from sinal.actors.hub import Hub
from sinal.engine.actor import Actor
from sinal.protocol import BROADCAST_LEVELS, BROADCAST_MAX_CHARS, Broadcast

log = logging.getLogger("sinal.bus")

BUS_NAME = "cluster_bus"
READ_WAIT = 1.0  # seconds one subscription read may block its worker thread
MAX_MESSAGE_BYTES = 16_384  # anything longer on the channel is not ours


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish this message to the cluster (from the session guard)."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """What `ClusterBus.broadcast` (or a node without Redis) did with a broadcast."""

    message: Broadcast
    scope: str  # "cluster": every subscribed process got it; "node": this process only
    processes: int  # processes the message reached (PUBLISH's answer, or 1)
    sockets: int  # sockets of this process that took it


def broadcast_message(text: str, level: str, *, now: float | None = None) -> Broadcast:
    stamp = time.gmtime(time.time() if now is None else now)
    return Broadcast(id=uuid.uuid4().hex, message=text, level=level,
                     timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp))


def parse_bus_message(raw: bytes | str) -> dict[str, Any] | None:
    """A message read from the channel, checked; None for anything that is not a well
    formed message of ours (anyone with access to Redis can publish on the channel)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return None
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("origin"), str):
        return None
    kind = message.get("type")
    if kind == "revoke":
        ok = isinstance(message.get("userId"), str) and type(message.get("position")) is int
    elif kind == "broadcast":
        roles = message.get("roles")
        ok = (isinstance(message.get("id"), str) and 0 < len(message["id"]) <= 64
              and isinstance(message.get("message"), str)
              and 0 < len(message["message"]) <= BROADCAST_MAX_CHARS
              and message.get("level") in BROADCAST_LEVELS
              and isinstance(message.get("timestamp"), str) and len(message["timestamp"]) <= 64
              and (roles is None or (isinstance(roles, list)
                                     and all(isinstance(r, str) for r in roles))))
    else:
        ok = False
    return message if ok else None


class ClusterBus(Actor[Announce]):
    kind = "cluster_bus"

    def __init__(self, hub: Hub, redis_url: str, *, prefix: str = "sinal:",
                 on_revoke: Callable[[str, int], None] | None = None) -> None:
        import redis

        super().__init__(BUS_NAME, capacity=256, registry=hub.registry)
        self.hub = hub
        self.channel = f"{prefix}bus"
        self.on_revoke = on_revoke
        self._redis_url = redis_url
        self.client: Any = redis.Redis.from_url(redis_url, socket_timeout=2,
                                           socket_connect_timeout=2)
        self.healthy = False  # subscribed, and the last read or publish reached Redis
        self.received = 0
        self.rejected = 0  # messages on the channel that were not ours
        self.published = 0
        self._received_lot = trio.lowlevel.ParkingLot()
        self._subscribed = trio.Event()  # this run has subscribed (a new one per run)

    # --- sending ---------------------------------------------------------------------

    def _publish_sync(self, payload: dict[str, Any]) -> int:
        body = json.dumps({**payload, "origin": self.hub.node_id}, separators=(",", ":"))
        return int(self.client.publish(self.channel, body))

    async def publish(self, payload: dict[str, Any]) -> int | None:
        """Publish to every subscribed process (this one included); how many processes it
        reached, or None when Redis did not take it."""
        try:
            reached = await trio.to_thread.run_sync(self._publish_sync, payload)
        except Exception as exc:
            log.warning("bus: could not publish %s: %s", payload.get("type"), exc)
            self.healthy = False
            return None
        self.published += 1
        return reached

    async def broadcast(self, message: Broadcast, roles: frozenset[str] | None
                        ) -> BroadcastResult:
        """Send an administrator's broadcast to the cluster; this process alone when Redis
        does not take it (and the result says so)."""
        reached = await self.publish({
            "type": "broadcast", "id": message.id, "message": message.message,
            "level": message.level, "timestamp": message.timestamp,
            "roles": sorted(roles) if roles is not None else None})
        if reached is None:
            return BroadcastResult(message, "node", 1, self.hub.broadcast(message, roles))
        # this process is subscribed too: its own sockets get it from the channel
        return BroadcastResult(message, "cluster", reached, 0)

    def announce_revoke(self, user_id: str, position: int) -> None:
        """Tell the other processes, without waiting (the session guard's path)."""
        if not self.ref.try_send(Announce({"type": "revoke", "userId": user_id,
                                           "position": position})):
            log.warning("bus: inbox full, a revocation was not announced (the log has it)")

    # --- receiving -------------------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> None:
        """Act on a checked message from the channel."""
        self.received += 1
        if message["type"] == "broadcast":
            roles = message.get("roles")
            self.hub.broadcast(
                Broadcast(id=message["id"], message=message["message"],
                          level=message["level"], timestamp=message["timestamp"]),
                frozenset(roles) if roles is not None else None)
        elif message["origin"] != self.hub.node_id and self.on_revoke is not None:
            self.on_revoke(message["userId"], message["position"])
        self._received_lot.unpark_all()

    async def wait_subscribed(self) -> None:
        """Until this run of the actor has subscribed: a message published after that
        reaches it."""
        await self._subscribed.wait()

    async def wait_received(self, count: int) -> None:
        while self.received < count:
            await self._received_lot.park()

    async def _read(self, pubsub: Any) -> None:
        while True:
            item = await trio.to_thread.run_sync(
                pubsub.get_message, True, READ_WAIT, abandon_on_cancel=True)
            self.healthy = True
            if item is None or item.get("type") != "message":
                continue
            message = parse_bus_message(item["data"])
            if message is None:
                self.rejected += 1
                log.warning("bus: ignored a message that is not Sinal's on %s", self.channel)
                continue
            self.deliver(message)

    def _subscribe_sync(self) -> Any:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        return pubsub

    async def on_start(self) -> None:
        if self._subscribed.is_set():
            self._subscribed = trio.Event()

    async def main(self) -> None:
        try:
            pubsub = await trio.to_thread.run_sync(self._subscribe_sync)
        except Exception:
            self.healthy = False
            raise
        self.healthy = True
        self._subscribed.set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, pubsub)
                async for announce in self.messages():
                    await self.publish(announce.payload)
                nursery.cancel_scope.cancel()
        except Exception:
            self.healthy = False
            raise
        finally:
            # a read abandoned on cancel is still blocked in its thread on this
            # subscription; closing it ends that read
            try:
                pubsub.close()
            except Exception as exc:  # leaving is best effort
                log.debug("bus: closing the subscription: %s", exc)
