"""Connection actor: one per WebSocket. Handshake and JWT auth, subscriptions with
authorisation, heartbeats both ways, idle timeout, rate limit, slow-consumer policy, resume.

Tasks of one connection: an idle connection has one, the actor's own, which reads its
client (the receive loop). Two more exist only while they have work, in the connection's
nursery: the transport's writer, while the kernel refuses bytes
(`WebSocketConnection.write_on_demand`), and the control task, while this actor's inbox
holds messages (`Lagged` from topics, `SilenceTimeout` and `Expired` from the node's
HeartbeatScheduler, which beats for every socket from one task, `Recheck` from the session
guard): posting one starts it, and it ends when the inbox is empty. A stop request from the
pool cancels the receive loop. Subscribing asks the topic through its inbox. Topics write
frames straight into the socket's outbox through `offer` (never blocks): the one place
where the hot path skips a channel (actors/topic.py).

Slow-consumer policy (docs/protocol.md): when the outbox is over its bound, the transport
refuses every offer; each topic that had a frame for us ends our subscription and posts
`Lagged`. The control loop waits (up to WEBSOCKET_CONNECTION_TIMEOUT) for room, sends
`resync {topic, offset: last_position, reason: "slow_consumer"}` for each ended
subscription, and accepts offers again. The client resubscribes with
`since: {topic: offset}` and loses nothing. A client that does not drain in time is
closed with 4301 slow_consumer. The server never holds more than the outbox bound. Once
the connection is closing, control messages are dropped: nothing more is said.

The `dashboard` topic is served by the aggregates actor (actors/aggregates.py), not by a
`Topic`: its subscription is kept with the others and ends the same ways (`_leave`).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import trio

from sinal.actors.aggregates import join_dashboard
from sinal.actors.hub import Hub
from sinal.actors.joining import TopicJoining
from sinal.actors.topic import Subscription
from sinal.domain.access import AccessError, RowFilter, subscription_filter
from sinal.domain.aggregates import DashboardPlan, dashboard_plan
from sinal.domain.audit import AuditEvent
from sinal.domain.catalogue import (
    DASHBOARD_TOPIC,
    LOG_TOPICS,
    METRICS_TOPIC,
    NOTIFICATION_TOPIC,
)
from sinal.domain.db import DB_SCOPE
from sinal.domain.principals import AuthError, Principal, SessionStart, release_kept
from sinal.domain.tokens import Claims, TokenError
from sinal.engine.actor import Actor
from sinal.engine.log import WS_LOGGER, event
from sinal.protocol import (
    CloseConnection,
    Connect,
    Encoding,
    ErrorCode,
    Heartbeat,
    Resync,
    SendError,
    ServerMessage,
    ServerSession,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
)
from sinal.websocket import ConnectionClosed, WebSocketConnection
from sinal.websocket.frames import build_frame

log = logging.getLogger("sinal.connection")
ws_log = logging.getLogger(WS_LOGGER)
# session ids: a generator of this process, seeded from the OS once
_session_bits = random.Random(int.from_bytes(os.urandom(32), "big")).getrandbits

RATE_WINDOW = 60.0  # seconds: over-budget frames are counted per window


@dataclass(frozen=True, slots=True)
class Lagged:
    """A topic ended this subscription: the outbox was full (or the topic failed)."""

    subscription: Subscription


@dataclass(frozen=True, slots=True)
class SilenceTimeout:
    """Nothing was received for WEBSOCKET_CONNECTION_TIMEOUT."""


@dataclass(frozen=True, slots=True)
class Expired:
    """The token's `exp` has passed: the session ends (token_expired)."""


@dataclass(frozen=True, slots=True)
class Recheck:
    """The user's grants changed (deactivated, role or department): look them up again."""


Control = Lagged | SilenceTimeout | Expired | Recheck
# Room for one Lagged per topic (and the dashboard) plus the timers and rechecks: a topic
# reports a subscription at most once; the others are coalesced (see `_post`).
CONTROL_INBOX = len(LOG_TOPICS) + 1 + 8


class ConnectionActor(TopicJoining, Actor[Control]):
    kind = "connection"
    # slotted: tens of thousands of these live at once, and a dict per instance of this
    # many attributes costs about 1.5 KB
    __slots__ = ("__weakref__", "_controlling", "_nursery", "_pending", "_recheck_posted",
                 "address", "beating", "claims", "closing", "encoding", "frames_in", "hub",
                 "known_head", "last_rate_error", "last_seen", "offer", "over_budget",
                 "over_window_start", "principal", "session", "session_id", "started_at",
                 "subscriptions", "user_id", "ws")

    def __init__(self, ws: WebSocketConnection, hub: Hub, encoding: Encoding) -> None:
        # unique, not secret (it names the session in presence rows and logs): 128 random
        # bits without a system call per connection (uuid4 reads the OS's randomness)
        self.session_id = f"{_session_bits(128):032x}"
        super().__init__(f"ws:{self.session_id[:12]}", capacity=CONTROL_INBOX,
                         registry=hub.registry, unique_name=False)
        self.ws = ws
        self.hub = hub
        self.encoding = encoding
        # The Sink's offer is the socket outbox's own (topics call it once per subscriber
        # per batch: no Python frame of ours in between).
        self.offer: Callable[[bytes], bool] = ws.offer
        self.session = ServerSession(encoding)
        self.user_id = ""
        self.principal: Principal | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.beating = False  # registered with the hub's HeartbeatScheduler
        self.last_seen = trio.current_time()
        self.started_at = time.time()
        self.frames_in = 0
        self.over_budget = 0  # frames dropped in the current rate window
        self.over_window_start = 0.0
        self.last_rate_error = -1.0
        self.closing = False
        self.claims: Claims | None = None
        self._recheck_posted = False
        self.address = hub.client_address(ws.request)
        self._pending = False  # counted among the sockets waiting to log in
        self.known_head = 0  # a change log head read from the database (at connect)
        self._nursery: trio.Nursery | None = None  # for the tasks started on demand
        self._controlling = False  # the control task runs

    # --- called synchronously by topics and the heartbeat scheduler: post to the inbox ---

    def lagged(self, subscription: Subscription) -> None:
        if not self._post(Lagged(subscription)):
            log.error("%s: control inbox full, a slow-consumer notice was dropped", self.name)

    def timed_out(self) -> None:
        self._post(SilenceTimeout())

    def expired(self) -> None:
        self._post(Expired())

    def recheck(self) -> None:
        if not self._recheck_posted:
            self._recheck_posted = self._post(Recheck())

    def _post(self, message: Control) -> bool:
        """Into the inbox; start the control task unless it runs (or the session has not
        started yet: then the session starts it)."""
        if not self.ref.try_send(message):
            return False
        if self._nursery is not None and not self._controlling:
            self._controlling = True
            self._nursery.start_soon(self._control)
        return True

    def stop(self) -> None:
        """A stop request (the pool, at shutdown): the receive loop ends; `main` then says
        server_shutdown."""
        super().stop()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # --- lifecycle ---------------------------------------------------------------------

    async def main(self) -> None:
        """Serve the socket until it closes. The transport must have its writer (`run` in a
        task, or `write_on_demand`)."""
        DB_SCOPE.set("websocket")  # this task's queries (and its children's) count apart
        try:
            refusal = self.hub.pending_refusal(self.address)
            if refusal is not None:  # checked at the upgrade too; this is the strict check
                self.hub.refused_pending += 1
                await self.close(ErrorCode.POOL_FULL, refusal)
                return
            self.hub.add_pending(self.address)
            self._pending = True
            if not await self._handshake():
                return
            if not self.stop_requested:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        if self.ref.depth:  # posted while logging in
                            self._controlling = True
                            nursery.start_soon(self._control)
                        await self._receive_loop()
                        nursery.cancel_scope.cancel()  # we closed while receiving
                    finally:
                        self._nursery = None  # closing: no new task (a post may come)
            if self.stop_requested and not self.closing:
                await self.close(ErrorCode.SERVER_SHUTDOWN, "server shutting down")
        except* ConnectionClosed:
            pass  # closed by the peer, or by us (timer, lag handler) while receiving
        finally:
            self._settle_pending()
            self._end_subscriptions()
            if self.user_id:
                self.hub.unregister(self)
                if self.hub.presence is not None:
                    self.hub.presence.disconnected(self.session_id)
                event(ws_log, "ws_disconnect", session=self.session_id, user=self.user_id,
                      code=self.ws.close_code, framesIn=self.frames_in)
            self.hub.note_close(self.ws.close_code)
            self.session.closed()

    def _settle_pending(self) -> None:
        if self._pending:
            self._pending = False
            self.hub.remove_pending(self.address)

    def _audit(self, action: str, **details: Any) -> None:
        self.hub.record(AuditEvent("websocket", self.session_id, action,
                                   self.user_id or None,
                                   {"remote": self.address, **details}))

    async def _close_with(self, action: CloseConnection) -> None:
        self.closing = True
        slow = action.error.code == ErrorCode.SLOW_CONSUMER
        if not slow:
            self.ws.offer(build_frame(action.frame, text=not self.encoding.binary))
        with trio.CancelScope(shield=True):
            await self.ws.close(action.close_code, action.reason, discard_pending=slow)

    async def close(self, code: ErrorCode, message: str | None = None) -> None:
        if self.closing:
            return
        await self._close_with(self.session.close(code, message))

    def _send(self, message: ServerMessage) -> bool:
        """Queue a control message in order with data frames; False when slow or closed."""
        payload = self.session.send(message)
        return self.ws.offer(build_frame(payload, text=not self.encoding.binary))

    # --- handshake ---------------------------------------------------------------------

    async def _handshake(self) -> bool:
        """From the upgrade to `welcome`, within WEBSOCKET_LOGIN_TIMEOUT: the connect
        frame and its authentication. Every failure closes the socket."""
        settings = self.hub.settings
        with trio.move_on_after(settings.login_timeout) as scope:
            start, ref = await self._login()
        if scope.cancelled_caught:
            await self.close(ErrorCode.HEARTBEAT_TIMEOUT,
                             f"not logged in within {settings.login_timeout_ms} ms")
            return False
        if start is None:
            return False
        principal = start.principal
        assert principal is not None
        if self.hub.active_connections >= settings.max_connections:
            self.hub.refused_total += 1
            await self._release_kept(start)
            await self.close(ErrorCode.POOL_FULL, "MAX_CONCURRENT_CONNECTIONS reached")
            return False
        self._settle_pending()
        assert self.claims is not None
        self.principal = principal
        self.user_id = principal.user_id
        self.known_head = start.head
        welcome = Welcome(
            session_id=self.session_id,
            server_time=int(time.time() * 1000),
            heartbeat_interval=settings.heartbeat_interval_ms,
            connection_timeout=settings.connection_timeout_ms,
            user_id=principal.user_id,
            role=principal.role,
            ref=ref,
        )
        payload = self.session.accept(welcome)
        self.ws.offer(build_frame(payload, text=not self.encoding.binary))
        self.hub.register(self)
        self.hub.heartbeats.add(self)
        self.hub.heartbeats.expire_at(
            self, trio.current_time() + max(0.0, self.claims.expires_at - time.time()))
        request = self.ws.request
        if self.hub.presence is not None:
            self.hub.presence.connected(
                self.session_id, principal.user_id,
                request.header("user-agent") if request else None,
                request.remote if request else None,
            )
        event(ws_log, "ws_connect", session=self.session_id, user=principal.user_id,
              role=principal.role, remote=request.remote if request else None)
        self.ws.request = None  # the request head is not kept for the session's life
        # The kept notifications first (older), then every notification after the head
        # read in the same snapshot: those not taken now are published after that head.
        self._offer_kept(start)
        await self._subscribe_topic(NOTIFICATION_TOPIC, None, start.head)
        return True

    def _offer_kept(self, start: SessionStart) -> None:
        from sinal.actors.notifications import kept_frames

        for frame in kept_frames(start.kept, self.encoding):
            if not self.ws.offer(frame):
                break

    async def _release_kept(self, start: SessionStart) -> None:
        ids = [int(row["id"]) for row in start.kept]
        if ids:
            try:
                await self.hub.db.run(lambda conn: release_kept(conn, ids))
            except psycopg.Error as exc:
                log.warning("%s: could not give back %d kept notifications: %s",
                            self.name, len(ids), exc)

    async def _login(self) -> tuple[SessionStart | None, Any]:
        """Read `connect` and authenticate it: the session's start (one round trip) and the
        frame's ref, or (None, None) once the socket has been closed with the reason."""
        frame = await self.ws.receive()
        self.last_seen = trio.current_time()
        received = self.session.receive(frame)
        if isinstance(received, CloseConnection | SendError):
            if isinstance(received, CloseConnection):
                await self._close_with(received)
            return None, None
        assert isinstance(received, Connect)
        auth = self.hub.authenticator
        try:
            # the user is read afresh: a session is long, memory may lag the database
            self.claims = auth.tokens.claims(received.token)
            start = await auth.start_session(self.claims, user_id=received.user_id)
        except TokenError as exc:
            self._audit(exc.code, reason=str(exc),
                        claimed=self.claims.user_id if self.claims else None)
            refused = self.session.fail(exc.code, str(exc), received.ref)
            assert isinstance(refused, CloseConnection)  # before welcome every error closes
            await self._close_with(refused)
            return None, None
        except psycopg.Error as exc:
            log.warning("cannot authenticate %s: database unavailable: %s", self.session_id, exc)
            await self.close(ErrorCode.INTERNAL_ERROR, "database unavailable, retry later")
            return None, None
        return start, received.ref

    # --- receiving ---------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        limiter = self.hub.rate_limiter
        assert limiter is not None
        while not self.closing:
            frame = await self.ws.receive()
            self.last_seen = trio.current_time()
            self.frames_in += 1
            received = self.session.receive(frame)
            if received is None:
                continue
            if isinstance(received, CloseConnection):
                await self._close_with(received)
                return
            # every frame counts against the budget, invalid ones too
            ref = (received.error.ref if isinstance(received, SendError)
                   else getattr(received, "ref", None))
            if not limiter.allow(self.user_id):
                if await self._over_budget(ref):
                    return
                continue
            if isinstance(received, SendError):
                self._send_error_frame(received)
                continue
            if isinstance(received, Heartbeat):
                if self.hub.presence is not None:
                    self.hub.presence.heartbeat(self.session_id)
            elif isinstance(received, Subscribe):
                await self._on_subscribe(received)
            elif isinstance(received, Unsubscribe):
                self._on_unsubscribe(received)
            # Connect after welcome is answered by the session (already_authenticated)

    async def _over_budget(self, ref: Any) -> bool:
        """Drop the frame; error at most once a second; close past twice the budget.
        Returns True when the connection was closed."""
        budget = self.hub.settings.rate_limit_per_minute
        now = trio.current_time()
        if now - self.over_window_start >= RATE_WINDOW:
            self.over_window_start, self.over_budget = now, 0
        self.over_budget += 1
        if self.over_budget > budget:
            self._audit("closed_rate_limited", budget=budget)
            await self.close(ErrorCode.RATE_LIMITED,
                             f"more than twice the budget of {budget} frames per minute")
            return True
        if now - self.last_rate_error >= 1.0:
            self.last_rate_error = now
            self._fail(ErrorCode.RATE_LIMITED,
                       f"more than {budget} frames per minute; frame dropped", ref)
        return False

    def _send_error_frame(self, error: SendError) -> None:
        self.ws.offer(build_frame(error.frame, text=not self.encoding.binary))

    def _fail(self, code: ErrorCode, message: str, ref: Any = None) -> None:
        result = self.session.fail(code, message, ref)
        if isinstance(result, SendError):
            self._send_error_frame(result)

    # --- subscriptions -------------------------------------------------------------------

    async def _on_subscribe(self, message: Subscribe) -> None:
        assert self.principal is not None
        filters: dict[str, RowFilter] = {}
        plan: DashboardPlan | None = None
        for topic in message.events:
            if topic == DASHBOARD_TOPIC:
                try:
                    if self.hub.dashboard is None:
                        raise AccessError("unknown_topic", "this node serves no dashboard")
                    plan = dashboard_plan(self.principal, message.filters)
                except AccessError as exc:
                    self._audit("subscribe_refused", code=exc.code, topic=topic)
                    self._fail(ErrorCode(exc.code), exc.message, message.ref)
                    return
                continue
            if topic == METRICS_TOPIC:
                if self.principal.role != "admin":
                    self._audit("subscribe_refused", code="forbidden", topic=topic)
                    self._fail(ErrorCode.FORBIDDEN, "metrics are for admins", message.ref)
                    return
                continue
            try:
                filters[topic] = subscription_filter(self.principal, topic, message.filters)
            except AccessError as exc:
                self._audit("subscribe_refused", code=exc.code, topic=topic[:128])
                self._fail(ErrorCode(exc.code), exc.message, message.ref)
                return
        since = dict(message.since or {})
        offsets = {t: self.hub.topics[t].head for t in filters}
        if METRICS_TOPIC in message.events:
            self.hub.metrics_sinks.add(self)
            offsets[METRICS_TOPIC] = 0
        if plan is not None and self.hub.dashboard is not None:
            offsets[DASHBOARD_TOPIC] = self.hub.dashboard.position
        if not self._send(Subscribed(events=tuple(message.events), offsets=offsets,
                                     ref=message.ref)):
            return
        for topic, row_filter in filters.items():
            await self._subscribe_topic(topic, row_filter, since.get(topic))
        if plan is not None:
            await self._subscribe_dashboard(plan, since.get(DASHBOARD_TOPIC))

    async def _subscribe_dashboard(self, plan: DashboardPlan, since: int | None) -> None:
        dashboard = self.hub.dashboard
        assert dashboard is not None
        old = self.subscriptions.pop(DASHBOARD_TOPIC, None)
        if old is not None:
            dashboard.leave(old)
        result = await join_dashboard(dashboard, self, plan, since, self.hub.db)
        if isinstance(result, Resync):
            self._send(result)
            return
        self.subscriptions[DASHBOARD_TOPIC] = result
        if not result.active:  # lagged before we recorded it: its notice was dropped
            self.lagged(result)

    def _leave(self, name: str, sub: Subscription) -> None:
        if name == DASHBOARD_TOPIC:
            if self.hub.dashboard is not None:
                self.hub.dashboard.leave(sub)
        else:
            self.hub.topics[name].leave(sub)

    def _on_unsubscribe(self, message: Unsubscribe) -> None:
        for topic in message.events:
            sub = self.subscriptions.pop(topic, None)
            if sub is not None:
                self._leave(topic, sub)
            if topic == METRICS_TOPIC:
                self.hub.metrics_sinks.discard(self)
        self._send(Unsubscribed(events=tuple(message.events), ref=message.ref))

    def _end_subscriptions(self) -> None:
        for name, sub in self.subscriptions.items():
            self._leave(name, sub)
        self.subscriptions.clear()
        self.hub.metrics_sinks.discard(self)

    # --- control -----------------------------------------------------------------------

    async def _control(self) -> None:
        """Acts on the inbox until it is empty: slow consumption reported by topics,
        silence, the token's expiry, changed grants. When it closes the connection it also
        ends the receive loop."""
        try:
            while (message := self.message_nowait()) is not None:
                if self.closing:
                    continue  # closing (by us or the peer): nothing more is said
                if not await self._act_on(message):
                    if self._nursery is not None:
                        self._nursery.cancel_scope.cancel()
                    return
        finally:
            self._controlling = False

    async def _act_on(self, message: Control) -> bool:
        """One control message; False when the connection was closed."""
        grace = self.hub.settings.connection_timeout
        if isinstance(message, SilenceTimeout):
            await self.close(ErrorCode.HEARTBEAT_TIMEOUT,
                             f"nothing received for "
                             f"{self.hub.settings.connection_timeout_ms} ms")
            return False
        if isinstance(message, Expired):
            self._audit("revoked", reason="token_expired")
            await self.close(ErrorCode.TOKEN_EXPIRED, "the token has expired: log in again")
            return False
        if isinstance(message, Recheck):
            return await self._recheck()
        sub = message.subscription
        if self.subscriptions.get(sub.topic) is not sub:
            return True  # already replaced (resubscribed) or ended
        del self.subscriptions[sub.topic]
        with trio.move_on_after(grace) as scope:
            payload = self.session.send(Resync(topic=sub.topic, offset=sub.last_position,
                                               reason="slow_consumer"))
            await self.ws.send_message(payload if self.encoding.binary else payload.decode())
            self.ws.clear_slow()
        if scope.cancelled_caught:
            self._audit("closed_slow_consumer")
            await self.close(ErrorCode.SLOW_CONSUMER,
                             "outbox did not drain within the connection timeout")
            return False
        return True

    async def _recheck(self) -> bool:
        """The user's grants changed: close when they may no longer connect, else end every
        subscription made under the old grants (`resync`, reason permissions_changed).
        Returns False when the connection was closed."""
        self._recheck_posted = False
        assert self.claims is not None and self.principal is not None
        try:
            principal = await self.hub.authenticator.principal(self.claims, fresh=True)
        except AuthError as exc:
            self._audit("revoked", reason="deactivated")
            await self.close(ErrorCode.AUTH_FAILED, f"{exc}: the session is over")
            return False
        except psycopg.Error as exc:  # cannot tell: keep the grants until the next change
            log.warning("%s: could not re-check the user: %s", self.name, exc)
            return True
        if principal == self.principal:
            return True
        self._audit("revoked", reason="permissions_changed", role=principal.role,
                    previous_role=self.principal.role)
        self.principal = principal
        if principal.role != "admin":
            self.hub.metrics_sinks.discard(self)
        for name, sub in list(self.subscriptions.items()):
            if name == NOTIFICATION_TOPIC:
                continue  # one's own notifications stay
            del self.subscriptions[name]
            self._leave(name, sub)
            self._send(Resync(topic=name, offset=sub.last_position,
                              reason="permissions_changed"))
        return True
