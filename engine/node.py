"""One Sinal node: the database, the HTTP front end and (with the realtime issue) the
WebSocket server, listener and topics, under one root.

`prepare_database` runs before Trio starts (embedded server, migrations, demo data);
`Node.run` is the Trio side.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from engine.config import Config
from engine.db import Database
from engine.embedded import EmbeddedPostgres
from engine.log import event
from engine.migrate import apply_migrations

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


@dataclass
class PreparedDatabase:
    url: str
    embedded: EmbeddedPostgres | None

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def prepare_database(config: Config, *, seed_demo_data: bool | None = None) -> PreparedDatabase:
    embedded = None
    url = config.database_url
    if not url:
        embedded = EmbeddedPostgres(config.data_dir / "postgres", config.sinal_embedded_pg_port)
        url = embedded.start()
    try:
        apply_migrations(url)
        if seed_demo_data if seed_demo_data is not None else config.development:
            from engine.demo import seed_demo

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

    def __post_init__(self) -> None:
        if not self.node_id:
            self.node_id = self.config.sinal_node_id or f"{socket.gethostname()}-{os.getpid()}"

    def health_metrics(self) -> dict[str, Any]:
        """Seed 8.2's health payload (connections, cache, latency are filled by later issues)."""
        import resource

        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        connections = 0
        metrics: dict[str, Any] = {
            "websocketConnections": connections,
            "cacheHitRate": 1.0,
            "averageLatency": 0.0,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "memoryUsage": {"maxRssMb": round(rss_mb, 1)},
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        metrics["healthy"] = (
            self.ready.is_set()
            and connections < self.config.max_concurrent_connections
            and metrics["cacheHitRate"] > 0.7
            and metrics["averageLatency"] < 500
        )
        return metrics

    async def serve_http(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        from api.app import create_app

        hconfig = HypercornConfig()
        hconfig.bind = [f"{self.config.sinal_host}:{self.config.http_port}"]
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("hypercorn.error")
        hconfig.graceful_timeout = 5
        app = create_app(self)

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(app, hconfig, task_status=task_status)

        async with trio.open_nursery() as nursery:
            bound: list[str] = await nursery.start(run)
            self.http_url = bound[0] if bound else ""
            task_status.started(self.http_url)

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self.db = Database(self.database_url)
        self.db.open()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.serve_http)
                self.websocket_url = (
                    f"ws://{self.config.sinal_host}:{self.config.websocket_port}/ws"
                )
                self.ready.set()
                event(log, "node_ready", node=self.node_id, http=self.http_url)
                task_status.started(self)
        finally:
            self.db.close()

