"""The node's HTTP side, composed: what the HTTP app is given, and the server that runs it.

api/ knows nothing of the node: `create_app(settings, db, authenticator, realtime, stats,
audit)` takes its settings as plain values (`api_settings`), the node's `AuditWriter`
(`node.audit`) as an `AuditLog`, and a read-only view of the realtime
side (`NodeRealtime`, the node's implementation of `api.realtime.RealtimeView`: memory
only). This module also holds the node's numbers that mix both sides -- the health payload,
the metrics publisher's sample, the metrics service's sample, the supervisor tree -- and
`serve_http`, the `http` child of the node's supervisor tree (hypercorn on HTTP_PORT).

What it reads of the running node: `node.hub.topics[name]` (`.version`, `.head`,
`.wait_head(position)`), `node.hub.active_connections` and `.describe()`, `node.listener`
(`.listen_conn`, `.lag`, `.position`, `.describe()`), `node.root.status()`,
`node.cluster`, and the node's own `ready`, `started_at`, `node_id`, `websocket_url`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio import serve as hypercorn_serve
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sinal.actors.bus import BroadcastResult, broadcast_message
from sinal.actors.listener import CatchUpNow
from sinal.api.http_rules import allowed_origins, dump_json
from sinal.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from sinal.api.settings import ApiSettings
from sinal.api.stats import health_report, peak_memory_mb, resident_memory_mb
from sinal.domain.aggregates import DashboardSource
from sinal.node.config import Config

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from sinal.actors.hub import Hub
    from sinal.node.wiring import Node


def api_settings(config: Config, node_id: str) -> ApiSettings:
    origins = allowed_origins(config.websocket_cors_origin)
    return ApiSettings(
        node_id=node_id,
        allowed_origins=None if origins is None else frozenset(origins),
        rate_limit_per_minute=config.rate_limit_requests_per_minute,
        cache_max_bytes=config.cache_max_size_mb * 2**20,
        cache_ttl_seconds=config.cache_ttl_seconds,
        compression=config.enable_compression,
        compression_level=config.compression_level,
        delta_updates=config.enable_delta_updates,
        smart_polling=config.enable_smart_polling,
        max_connections=config.max_concurrent_connections,
        development=config.development,
        trusted_proxies=config.trusted_proxies,
    )


class NodeRealtime:
    """The running node as the HTTP side may see it (api.realtime.RealtimeView)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def _hub(self) -> Hub:
        hub = self.node.hub
        assert hub is not None, "the HTTP side starts after the node built its tree"
        return hub

    def topic_version(self, topic: str) -> int:
        return self._hub.topics[topic].version

    def topic_head(self, topic: str) -> int:
        return self._hub.topics[topic].head

    async def wait_head(self, topic: str, position: int) -> None:
        waiting = self._hub.topics[topic]
        if waiting.head < position and self.node.listener is not None:
            # the log has it and the listener has not read it yet: ask for a read now
            # rather than at its next notification or poll tick
            self.node.listener.ref.try_send(CatchUpNow())
        await waiting.wait_head(position)

    def ready(self) -> bool:
        return self.node.ready.is_set() and not self.node.draining

    def draining(self) -> bool:
        return self.node.draining

    async def broadcast(self, message: str, level: str, roles: frozenset[str] | None
                        ) -> dict[str, Any]:
        sent = broadcast_message(message, level)
        if self.node.bus is not None:
            result = await self.node.bus.broadcast(sent, roles)
        else:
            result = BroadcastResult(sent, "node", 1, self._hub.broadcast(sent, roles))
        return {"id": sent.id, "level": sent.level, "timestamp": sent.timestamp,
                "scope": result.scope, "processes": result.processes,
                "sockets": result.sockets}

    def listening(self) -> bool:
        listener = self.node.listener
        return listener is not None and listener.listen_conn is not None

    def active_connections(self) -> int:
        hub = self.node.hub
        return hub.active_connections if hub is not None else 0

    def pending_connections(self) -> int:
        hub = self.node.hub
        return hub.pending if hub is not None else 0

    def cluster_connections(self) -> int:
        cluster = self.node.cluster
        return cluster.cluster_connections() if cluster is not None \
            else self.active_connections()

    def cluster_state(self) -> str:
        return self.node.cluster_state()

    def listener_status(self) -> dict[str, Any] | None:
        listener = self.node.listener
        return listener.describe() if listener is not None else None

    def uptime(self) -> float:
        return time.monotonic() - self.node.started_at

    def websocket_url(self) -> str:
        return self.node.websocket_url

    def status_tree(self) -> dict[str, Any]:
        return status_tree(self.node)

    def dashboard(self) -> DashboardSource:
        assert self.node.dashboard is not None, "the aggregates actor is built with the tree"
        return self.node.dashboard

    def collectors(self) -> list[Collector]:
        return [_RealtimeCollector(self.node)]


# --- the node's numbers --------------------------------------------------------------------

def status_tree(node: Node) -> dict[str, Any]:
    """The supervisor tree, the cluster, the hub and the listener (GET /api/supervisor)."""
    tree: dict[str, Any] = node.root.status() if node.root else {}
    cluster = ({"nodes": node.cluster.last_view,
                "connections": node.cluster.cluster_connections()}
               if node.cluster else None)
    return {"node": node.node_id, "tree": tree, "cluster": cluster,
            "realtime": node.hub.describe() if node.hub else None,
            "listener": node.listener.describe() if node.listener else None,
            "aggregates": node.aggregates.describe() if node.aggregates else None,
            "gc": node.collector.describe() if node.collector else None}


def health_metrics(node: Node) -> dict[str, Any]:
    """Seed 8.2's health payload (GET /health/realtime), from memory only."""
    return health_report(NodeRealtime(node), node.http_stats,
                         node.config.max_concurrent_connections)


def gather_metrics(node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the metrics publisher pushes to admin sockets: performance and status."""
    hub = node.hub
    assert hub is not None
    performance = {
        "connections": hub.active_connections,
        "framesOut": sum(t.frames_out for t in hub.topics.values()),
        "listenerLag": node.listener.lag if node.listener else 0,
        "maxRssMb": peak_memory_mb(),
        **node.http_stats.snapshot(),
    }
    status = {"node": node.node_id, "ready": node.ready.is_set(),
              "uptime": round(time.monotonic() - node.started_at, 1)}
    return performance, status


def performance_sample(node: Node) -> dict[str, float]:
    """What the metrics service records and checks (seed 8.2's metrics)."""
    stats = node.http_stats
    hub = node.hub
    return {
        "averageLatency": stats.average_latency_ms(),
        "cacheHitRate": stats.cache_hit_rate() if stats.hit_rate_judged() else 1.0,
        "requestsPerMinute": float(stats.requests_per_minute()),
        "activeConnections": float(hub.active_connections if hub else 0),
        "memoryMb": resident_memory_mb(),
        "listenerLag": float(node.listener.lag if node.listener else 0),
    }


class _RealtimeCollector(Collector):
    """Scrape-time gauges of the realtime side, from the node's memory."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node, hub, listener = self.node, self.node.hub, self.node.listener
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        yield gauge("sinal_node_ready", "1 once the node serves",
                    value=1 if node.ready.is_set() else 0)
        if hub is not None:
            yield gauge("sinal_websocket_connections", "Open WebSocket sessions",
                        value=hub.active_connections)
            yield counter("sinal_websocket_connections_opened",
                          "WebSocket sessions authenticated since start",
                          value=hub.connections_total)
            yield counter("sinal_websocket_refused", "WebSocket upgrades refused (over the limit)",
                          value=hub.refused_total)
            yield gauge("sinal_websocket_pending", "WebSocket sockets waiting to log in",
                        value=hub.pending)
            yield counter("sinal_websocket_refused_pending",
                          "Sockets refused for the pre-login quota or the per-address cap",
                          value=hub.refused_pending)
            subscribers = gauge("sinal_topic_subscribers", "Subscriptions by topic",
                                labels=["topic"])
            head = gauge("sinal_topic_head", "Last position published, by topic",
                         labels=["topic"])
            frames = counter("sinal_topic_frames_out", "Frames fanned out to sockets, by topic",
                             labels=["topic"])
            lagged = counter("sinal_topic_lagged",
                             "Subscriptions ended as slow consumers, by topic", labels=["topic"])
            for name, topic in sorted(hub.topics.items()):
                subscribers.add_metric([name], topic.subscribers)
                head.add_metric([name], topic.head)
                frames.add_metric([name], topic.frames_out)
                lagged.add_metric([name], topic.lagged_total)
            yield from (subscribers, head, frames, lagged)
        if listener is not None:
            yield gauge("sinal_listener_lag", "Changes sequenced but not yet handed to topics",
                        value=listener.lag)
            yield gauge("sinal_listener_position", "Change-log position the listener has reached",
                        value=listener.position)
            yield counter("sinal_listener_changes_read", "Changes read from the log",
                          value=listener.changes_read)
        collector = node.collector
        if collector is not None:
            yield counter("sinal_gc_full_collections",
                          "Full garbage collections run by the garbage_collector",
                          value=collector.collections)
            yield gauge("sinal_gc_last_full_pause_seconds",
                        "How long the last full garbage collection paused the process",
                        value=collector.last_pause)


# --- the server ----------------------------------------------------------------------------

_SERVER_ERRORS = {
    400: ("malformed_request", "the request is not valid HTTP/1.1; the connection is closed"),
    431: ("headers_too_large", "the request line or headers are too large; the connection "
                               "is closed"),
}


def _error_answer(status: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    code, detail = _SERVER_ERRORS.get(status, (
        "internal_error" if status >= 500 else "malformed_request",
        "the request could not be served; the connection is closed"))
    body = dump_json(problem_body(status, code, detail))
    return [(b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()), (b"connection", b"close")], body


async def _h11_error(self: H11Protocol, status_code: int) -> None:
    headers, body = _error_answer(status_code)
    await self._send_h11_event(h11.Response(
        status_code=status_code, headers=[*headers, *self.config.response_headers("h11")]))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


async def _ws_stream_error(self: WSStream, status_code: int) -> None:
    headers, body = _error_answer(status_code)
    await self.send(Response(stream_id=self.stream_id, status_code=status_code,
                             headers=headers))
    await self.send(Body(stream_id=self.stream_id, data=body))
    await self.send(EndBody(stream_id=self.stream_id))
    await self.config.log.access(self.scope, {"status": status_code, "headers": []},
                                 time.time() - self.start_time)


def answer_server_errors_as_problems() -> None:
    """What hypercorn answers itself, before any app sees a request -- a request h11
    refuses (400; 431 for a request line or headers over its limit) or an invalid
    WebSocket handshake (400) -- it answers with an empty body. Every 4xx and 5xx of
    Sinal is problem details, so these are too: the same status, `Connection: close`, and
    a problem+json body with a documented code. (Hypercorn has no hook for these answers;
    its two senders are replaced, once per process.)"""
    H11Protocol._send_error_response = _h11_error  # type: ignore[method-assign]
    WSStream._send_error_response = _ws_stream_error  # type: ignore[method-assign]


def build_app(node: Node) -> QuartTrio:
    """The HTTP app over the running node (after `build_tree`)."""
    from sinal.api.app import create_app  # Quart loads only for the nodes that serve

    assert node.db is not None and node.authenticator is not None and node.audit is not None
    return create_app(api_settings(node.config, node.node_id), node.db, node.authenticator,
                      NodeRealtime(node), node.http_stats, node.audit, node.rest_limiter)


async def serve_http(node: Node, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Hypercorn on SINAL_HOST:HTTP_PORT; `node.http_url` once bound."""
    hconfig = HypercornConfig()
    hconfig.bind = [f"{node.config.sinal_host}:{node.config.http_port}"]
    if node.config.sinal_reuse_port:
        # a worker of `--workers N` (node/workers.py): the port is shared with SO_REUSEPORT,
        # which this socket sets before bind; hypercorn takes it over by file descriptor
        from sinal.node.workers import reserve_port

        sock = reserve_port(node.config.sinal_host, node.config.http_port)
        hconfig.bind = [f"fd://{sock.detach()}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.graceful_timeout = 3
    answer_server_errors_as_problems()
    app = build_app(node)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(app, hconfig, task_status=task_status)

    async with trio.open_nursery() as nursery:
        bound: list[str] = await nursery.start(run)
        node.http_url = bound[0] if bound else ""
        task_status.started()
