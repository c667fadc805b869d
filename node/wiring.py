"""One Sinal node: its supervisor tree.

    sinal (one_for_one)
    ├── garbage_collector         full collections on a timer (SINAL_GC_FULL_INTERVAL)
    ├── http                      Quart-Trio on HTTP_PORT (health, REST, status)
    └── realtime (rest_for_one)
        ├── topics (one_for_one)  one Topic actor per topic
        ├── heartbeats            heartbeats out, silence checks, for every socket
        ├── database_services (one_for_one, patient)
        │   ├── presence              websocket_connections / deliveries, batched
        │   ├── audit                 the security audit trail, batched
        │   ├── notification_producer notifications from every change
        │   ├── session_guard         revokes sessions when a user's grants change
        │   ├── aggregates            the dashboard's figures, from every change
        │   ├── database_listener     LISTEN + sequencer + change-log reads
        │   ├── metrics_publisher
        │   ├── delivery_watch        orders past their expected date become late
        │   ├── housekeeping          retention of the tables that only grow
        │   ├── metrics_service       performance_metrics rows and alerts (if enabled)
        │   ├── cluster_presence      (with Redis) this node in the cluster registry
        │   └── cluster_bus           (with Redis) broadcasts and revocations, pub/sub
        ├── websocket             the WebSocket endpoint, :WEBSOCKET_PORT/ws
        └── connections (pool)    one ConnectionActor per socket, MAX_CONCURRENT_CONNECTIONS

rest_for_one: if the topics fail, everything after them restarts (the listener re-feeds
them, connections resubscribe after their resync). The database services sit under their
own patient supervisor: a database that is down makes them restart with capped backoff for
as long as it takes, without escalating, while sockets stay open. Every actor is
registered in the node's own registry (docs/actors.md).

`prepare_database` runs before Trio starts (embedded server, migrations, demo data).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import trio

from sinal.actors.aggregates import AggregatesActor
from sinal.actors.audit import AuditWriter
from sinal.actors.bus import ClusterBus
from sinal.actors.cluster import ClusterPresence
from sinal.actors.collector import GarbageCollector
from sinal.actors.delivery_watch import DeliveryWatch
from sinal.actors.housekeeping import Housekeeping
from sinal.actors.hub import Hub
from sinal.actors.listener import DatabaseListener
from sinal.actors.metrics_push import MetricsPublisher
from sinal.actors.metrics_service import MetricsService
from sinal.actors.notifications import NotificationProducer, mark_offered, render_notification
from sinal.actors.presence import PresenceWriter
from sinal.actors.server import WebSocketServer, connection_pool
from sinal.actors.sessions import SessionGuard
from sinal.actors.topic import Topic
from sinal.api.stats import RequestStats
from sinal.domain.aggregates import DashboardSource, utc_now
from sinal.domain.catalogue import LOG_TOPICS, NOTIFICATION_TOPIC
from sinal.domain.db import Database
from sinal.domain.principals import Authenticator
from sinal.domain.ratelimit import SharedRateLimiter
from sinal.engine.dynamic import DynamicSupervisor
from sinal.engine.log import event
from sinal.engine.registry import Registry
from sinal.engine.spec import StartFn
from sinal.engine.supervisor import ChildSpec, Strategy, Supervisor, SupervisorFlags
from sinal.node import http as node_http
from sinal.node.config import Config
from sinal.node.embedded import EmbeddedPostgres
from sinal.node.failures import database_unavailable
from sinal.node.http import performance_sample
from sinal.node.migrate import apply_migrations
from sinal.node.settings import alert_thresholds, realtime_settings
from sinal.websocket import ConnectionLimits

log = logging.getLogger("sinal.node")


def resolve_jwt_secret(config: Config) -> Config:
    """Development without JWT_SECRET: a random secret kept in the data folder (and said so)."""
    if config.jwt_secret:
        return config
    path = config.data_dir / "jwt_secret"
    if path.is_file():
        secret = path.read_text().strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
    log.warning("JWT_SECRET is not set: development mode uses the generated secret in %s", path)
    return config.with_values(jwt_secret=secret)


class _Reported:
    """A task_status that remembers whether the child reported ready."""

    def __init__(self, task_status: trio.TaskStatus[Any]) -> None:
        self.task_status = task_status
        self.reported = False

    def started(self, value: Any = None) -> None:
        self.reported = True
        self.task_status.started(value)


def start_degraded(run: StartFn) -> StartFn:
    """A child that must not stop the node from starting: Redis is cluster state, degraded
    but never lost. When `run` fails before it is ready (Redis away), the child reports
    ready anyway and fails at once, so the node starts and serves alone while its patient
    supervisor restarts the child with backoff until Redis answers. (The CLI has already
    said so in one line: node/failures.py.)"""

    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        reporter = _Reported(task_status)
        try:
            await run(task_status=reporter)
        except Exception:
            if not reporter.reported:
                task_status.started(None)
            raise

    return start


@dataclass
class PreparedDatabase:
    url: str
    embedded: EmbeddedPostgres | None

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def prepare_database(config: Config, *, seed_demo_data: bool | None = None) -> PreparedDatabase:
    """The database's URL, ready: the embedded server started (or reused) when there is no
    DATABASE_URL, migrations applied, demo data in development. A database that does not
    answer raises `DatabaseUnavailable` (one line for the operator, node/failures.py)."""
    embedded = None
    url = config.database_url
    if not url:
        embedded = EmbeddedPostgres(config.data_dir / "postgres", config.sinal_embedded_pg_port)
        url = embedded.start()
    try:
        try:
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            raise database_unavailable(url, exc, embedded=embedded is not None) from exc
        apply_migrations(url)
        if seed_demo_data if seed_demo_data is not None else config.development:
            from sinal.node.demo import seed_demo

            with psycopg.connect(url, autocommit=True) as conn:
                if conn.execute("SELECT count(*) FROM users").fetchone() == (0,):
                    seed_demo(conn)
                    log.info("seeded the demo organisation (development mode)")
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    return PreparedDatabase(url, embedded)


@dataclass
class Node:
    config: Config
    database_url: str
    node_id: str = ""
    started_at: float = field(default_factory=time.monotonic)
    ready: trio.Event = field(default_factory=trio.Event)
    http_url: str = ""
    websocket_url: str = ""
    db: Database | None = None
    hub: Hub | None = None
    authenticator: Authenticator | None = None
    audit: AuditWriter | None = None
    registry: Registry = field(default_factory=Registry)
    listener: DatabaseListener | None = None
    pool: DynamicSupervisor | None = None
    root: Supervisor | None = None
    websocket: WebSocketServer | None = None
    ws_limits: ConnectionLimits | None = None
    metrics_interval: float = 5.0
    http_stats: RequestStats = field(default_factory=RequestStats)
    metrics_service: MetricsService | None = None
    delivery_check_interval: float = 60.0
    delivery_watch: DeliveryWatch | None = None
    housekeeping: Housekeeping | None = None
    cluster: ClusterPresence | None = None
    bus: ClusterBus | None = None
    cluster_interval: float = 5.0
    listener_poll_interval: float = 1.0
    # full garbage collections on a timer (SINAL_GC_FULL_INTERVAL; actors/collector.py);
    # gc_freeze: freeze what exists at start (`sinal serve` sets it; a test process does not)
    collector: GarbageCollector | None = None
    gc_freeze: bool = False
    clock: Callable[[], datetime] = utc_now  # the dashboard's day (tests inject theirs)
    aggregates: AggregatesActor | None = None
    # what the HTTP side reads of the aggregates (read-only; domain.aggregates)
    dashboard: DashboardSource | None = None
    # SIGTERM: readiness answers 503 from here on, before the tree stops (drain())
    draining: bool = False
    # the cluster's budgets in Redis (None without Redis: each process its own)
    rest_limiter: SharedRateLimiter | None = None
    ws_limiter: SharedRateLimiter | None = None

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = self.config.sinal_node_id or f"{socket.gethostname()}-{os.getpid()}"

    # --- numbers (node/http.py) ------------------------------------------------------------

    def health_metrics(self) -> dict[str, Any]:
        """Seed 8.2's health payload, from memory only (a health check never queries)."""
        return node_http.health_metrics(self)

    def gather_metrics(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return node_http.gather_metrics(self)

    def status_tree(self) -> dict[str, Any]:
        return node_http.status_tree(self)

    def cluster_state(self) -> str:
        """"none" without Redis; "degraded" while the budgets fall back to local ones or
        the registry cannot publish; else "ok"."""
        if not self.config.effective_redis_url:
            return "none"
        limiters = [x for x in (self.rest_limiter, self.ws_limiter) if x is not None]
        if any(limiter.degraded for limiter in limiters):
            return "degraded"
        if any(part is not None and not part.healthy for part in (self.cluster, self.bus)):
            return "degraded"
        return "ok"

    def _shared_limiters(self, redis_url: str) -> None:
        """Rate budgets for the whole cluster: one Redis connection per kind (a charge is
        one Lua round trip with a short timeout; domain/ratelimit.py)."""
        import redis

        per_minute = self.config.rate_limit_requests_per_minute
        prefix = self.config.sinal_redis_prefix

        def client() -> Any:
            return redis.Redis.from_url(redis_url, socket_timeout=0.25,
                                        socket_connect_timeout=0.25)

        self.rest_limiter = SharedRateLimiter(per_minute, client(), prefix=prefix + "rest:",
                                              clock=trio.current_time)
        self.ws_limiter = SharedRateLimiter(per_minute, client(), prefix=prefix + "ws:",
                                            clock=trio.current_time)

    # --- children ----------------------------------------------------------------------------

    async def serve_http(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        await node_http.serve_http(self, task_status=task_status)

    def _metrics_service_spec(self) -> list[ChildSpec]:
        """performance_metrics rows and alerts, when ENABLE_PERFORMANCE_MONITORING."""
        if not self.config.enable_performance_monitoring:
            return []
        assert self.db is not None
        self.metrics_service = MetricsService(
            self.db, lambda: performance_sample(self),
            interval=self.config.metrics_collection_interval / 1000,
            limits=alert_thresholds(self.config), node_id=self.node_id,
            registry=self.registry)
        return [ChildSpec.of(self.metrics_service)]

    def build_tree(self) -> Supervisor:
        """Build every part once, each with what it needs, and the supervisor tree."""
        assert self.db is not None
        config, db, registry = self.config, self.db, self.registry
        settings = realtime_settings(config)
        presence = PresenceWriter(db, self.node_id, registry=registry)
        self.audit = AuditWriter(db, registry=registry)
        topics = {name: Topic(name, ring_size=settings.ring_size, registry=registry)
                  for name in LOG_TOPICS if name != NOTIFICATION_TOPIC}
        topics[NOTIFICATION_TOPIC] = Topic(
            NOTIFICATION_TOPIC, ring_size=settings.ring_size, registry=registry,
            render=render_notification, on_offered=mark_offered(presence))
        redis_url = config.effective_redis_url
        if redis_url:
            self._shared_limiters(redis_url)
        users = topics["user_changed"]
        self.authenticator = Authenticator(db, config.jwt_secret, lambda: users.version)
        aggregates = self.aggregates = AggregatesActor(
            db, interval=config.dashboard_update_interval_ms / 1000, clock=self.clock,
            registry=registry)
        self.dashboard = aggregates
        hub = self.hub = Hub(settings, db, self.node_id, self.authenticator, topics,
                             registry=registry, presence=presence, audit=self.audit,
                             dashboard=aggregates, rate_limiter=self.ws_limiter)
        producer = NotificationProducer(db, registry=registry)
        guard = SessionGuard(hub)
        # every change the listener reads goes to these too (by registered name)
        self.listener = DatabaseListener(db, list(topics), registry=registry,
                                         poll_interval=self.listener_poll_interval,
                                         changes_to=(producer.name, guard.name,
                                                     aggregates.name))
        self.delivery_watch = DeliveryWatch(db, self.delivery_check_interval,
                                            registry=registry)
        self.housekeeping = Housekeeping(db, config.sinal_retention_hours, registry=registry)
        if redis_url:
            self.cluster = ClusterPresence(
                hub, redis_url, prefix=config.sinal_redis_prefix,
                interval=self.cluster_interval,
                describe=lambda: {"http": self.http_url, "websocket": self.websocket_url,
                                  "pid": os.getpid(),
                                  "position": self.listener.position if self.listener else 0})
            self.bus = ClusterBus(hub, redis_url, prefix=config.sinal_redis_prefix,
                                  on_revoke=guard.revoke_early)
            guard.announce = self.bus.announce_revoke
        self.pool = connection_pool(hub)
        self.websocket = WebSocketServer(hub, self.pool, host=config.sinal_host,
                                         port=config.websocket_port, limits=self.ws_limits,
                                         reuse_port=config.sinal_reuse_port)
        topic_supervisor = Supervisor(
            "topics", [ChildSpec.of(topic) for topic in topics.values()],
            SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10, period=10),
        )
        # Patient: a database that is down makes these restart with capped backoff for
        # as long as it takes; sockets and topics stay up meanwhile.
        services = Supervisor(
            "database_services",
            [
                ChildSpec.of(presence),
                ChildSpec.of(self.audit),
                ChildSpec.of(producer),
                ChildSpec.of(guard),
                ChildSpec.of(aggregates),
                ChildSpec.of(self.listener),
                ChildSpec.of(MetricsPublisher(hub, self.gather_metrics, self.metrics_interval)),
                ChildSpec.of(self.delivery_watch),
                ChildSpec.of(self.housekeeping),
                *self._metrics_service_spec(),
                *[ChildSpec(name=part.name, kind=part.kind, start=start_degraded(part.run))
                  for part in (self.cluster, self.bus) if part is not None],
            ],
            SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=1000, period=60,
                            backoff_base=0.2, backoff_cap=5.0),
        )
        realtime = Supervisor(
            "realtime",
            [
                ChildSpec.of(topic_supervisor),
                ChildSpec(name="heartbeats", start=hub.heartbeats.run,
                          kind="heartbeat_scheduler"),
                ChildSpec.of(services),
                # The accept loop starts before the pool and stops after it: at shutdown
                # the pool asks every connection to stop (server_shutdown, 4501) while
                # their tasks, which live in the accept loop's nursery, still run.
                ChildSpec(name="websocket", start=self.websocket.run, kind="websocket_server"),
                ChildSpec.of(self.pool),
            ],
            SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=5, period=30),
        )
        if config.sinal_gc_full_interval > 0:
            self.collector = GarbageCollector(config.sinal_gc_full_interval,
                                              freeze=self.gc_freeze, registry=registry)
        return Supervisor(
            "sinal",
            [*([ChildSpec.of(self.collector)] if self.collector else []),
             ChildSpec(name="http", start=self.serve_http, kind="http_server"),
             ChildSpec.of(realtime)],
            SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=3, period=30),
        )

    async def drain(self, scope: trio.CancelScope) -> None:
        """A graceful stop (SIGTERM): readiness turns false first, so a load balancer that
        polls /health/ready stops sending new clients here; SINAL_DRAIN_TIMEOUT later the
        tree stops, and every socket gets `server_shutdown` (4501) and reconnects
        elsewhere (the client library adds jitter)."""
        self.draining = True
        event(log, "node_draining", node=self.node_id,
              seconds=self.config.sinal_drain_timeout / 1000)
        await trio.sleep(self.config.sinal_drain_timeout / 1000)
        scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self.db = Database(self.database_url, max_size=8)
        await trio.to_thread.run_sync(self.db.open)
        try:
            self.root = self.build_tree()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.root.run)
                assert self.websocket is not None
                self.websocket_url = (
                    f"ws://{self.config.sinal_host}:{self.websocket.bound_port}/ws"
                )
                self.ready.set()
                event(log, "node_ready", node=self.node_id, http=self.http_url,
                      websocket=self.websocket_url)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.db.close)
