"""MetricsService actor: performance_metrics rows and the seed's AlertManager (8.2).

Every METRICS_COLLECTION_INTERVAL it samples the node (a callable the composition root
gives it),
writes one performance_metrics row per metric (metadata: the node), and checks:

| alert | when | severity |
|---|---|---|
| HIGH_LATENCY | averageLatency > PERFORMANCE_ALERT_THRESHOLD_MS | warning |
| LOW_CACHE_HIT_RATE | cacheHitRate < 0.6 | warning |
| HIGH_MEMORY | memoryMb > 512 | critical |
| HIGH_CONNECTIONS | activeConnections > 0.8 x MAX_CONCURRENT_CONNECTIONS (800 of 1000) | warning |

An alert fires when its condition starts (not again while it lasts; once more after it
has cleared): a warning in the log and one `notifications` row per active admin (kind
`performance_alert`, their preferences applied as for any notification). The row travels
the change log like every notification, so it reaches the admins' sockets on any node as
a `notification` frame, or waits for their next connect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sinal.domain.db import Database
from sinal.domain.notifications import notify_admins
from sinal.engine.log import PERF_LOGGER, event
from sinal.engine.periodic import PeriodicActor
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.metrics")
perf_log = logging.getLogger(PERF_LOGGER)  # LOG_PERFORMANCE_METRICS switches it

MAX_METRIC_VALUE = 99_999_999.99  # DECIMAL(10, 2)

METRIC_TYPES = {
    "averageLatency": "average_latency_ms",
    "cacheHitRate": "cache_hit_rate",
    "requestsPerMinute": "requests_per_minute",
    "activeConnections": "active_connections",
    "memoryMb": "memory_mb",
    "listenerLag": "listener_lag",
}


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    max_latency_ms: float = 1000.0
    min_cache_hit_rate: float = 0.6
    max_memory_mb: float = 512.0
    max_connections: float = 800.0



@dataclass(frozen=True, slots=True)
class Alert:
    type: str
    severity: str
    message: str
    value: float
    threshold: float


def check_metrics(sample: Mapping[str, float], limits: AlertThresholds) -> list[Alert]:
    """The seed's AlertManager.checkMetrics: every rule that the sample breaks."""
    alerts = []
    latency = sample.get("averageLatency", 0.0)
    if latency > limits.max_latency_ms:
        alerts.append(Alert("HIGH_LATENCY", "warning", f"Latência alta: {latency:.0f}ms",
                            latency, limits.max_latency_ms))
    hit_rate = sample.get("cacheHitRate", 1.0)
    if hit_rate < limits.min_cache_hit_rate:
        alerts.append(Alert("LOW_CACHE_HIT_RATE", "warning",
                            f"Taxa de acerto do cache baixa: {hit_rate:.0%}", hit_rate,
                            limits.min_cache_hit_rate))
    memory = sample.get("memoryMb", 0.0)
    if memory > limits.max_memory_mb:
        alerts.append(Alert("HIGH_MEMORY", "critical", f"Uso de memória alto: {memory:.0f}MB",
                            memory, limits.max_memory_mb))
    connections = sample.get("activeConnections", 0.0)
    if connections > limits.max_connections:
        alerts.append(Alert("HIGH_CONNECTIONS", "warning",
                            f"Muitas conexões simultâneas: {connections:.0f}", connections,
                            limits.max_connections))
    return alerts


class MetricsService(PeriodicActor):
    kind = "metrics_service"

    def __init__(self, db: Database, sample: Callable[[], Mapping[str, float]], *,
                 interval: float, limits: AlertThresholds, node_id: str,
                 registry: Registry | None = None) -> None:
        super().__init__("metrics_service", interval, registry=registry)
        self.db = db
        self.sample = sample
        self.limits = limits
        self.node_id = node_id
        self.active: dict[str, Alert] = {}  # alert type -> the alert while it lasts
        self.samples = 0
        self.alerts_raised = 0

    async def tick(self) -> None:
        await self.collect_once()

    async def collect_once(self) -> list[Alert]:
        """Record one sample, and raise the alerts that have just started. Returns them."""
        sample = dict(self.sample())
        await self.db.run(lambda conn: self._record(conn, sample))
        self.samples += 1
        event(perf_log, "performance_sample", node=self.node_id, sample=sample)
        current = {alert.type: alert for alert in check_metrics(sample, self.limits)}
        started = [a for t, a in current.items() if t not in self.active]
        for gone in set(self.active) - set(current):
            event(log, "performance_alert_cleared", node=self.node_id, alert=gone)
        if started:
            await self.raise_alerts(started)
        self.active = current
        return started

    async def raise_alerts(self, alerts: list[Alert]) -> int:
        """Log each alert and notify every active admin; returns the notifications made."""
        for alert in alerts:
            log.warning("performance alert %s (%s): %s", alert.type, alert.severity,
                        alert.message, extra={"fields": {
                            "event": "performance_alert", "node": self.node_id,
                            "alert": alert.type, "value": alert.value,
                            "threshold": alert.threshold}})
        made: int = await self.db.run(lambda conn: self._notify(conn, alerts))
        self.alerts_raised += len(alerts)
        return made

    def _record(self, conn: psycopg.Connection[Any], sample: dict[str, float]) -> None:
        rows = [(METRIC_TYPES[name], max(-MAX_METRIC_VALUE, min(MAX_METRIC_VALUE, value)),
                 Jsonb({"node": self.node_id}))
                for name, value in sample.items() if name in METRIC_TYPES]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO performance_metrics (metric_type, metric_value, "
                            "metadata) VALUES (%s, round(%s::numeric, 2), %s)", rows)

    def _notify(self, conn: psycopg.Connection[Any], alerts: list[Alert]) -> int:
        made = 0
        with conn.transaction():
            for alert in alerts:
                action = {"kind": "metrics", "alert": alert.type, "severity": alert.severity,
                          "node": self.node_id, "value": alert.value,
                          "threshold": alert.threshold}
                made += notify_admins(conn, f"[{self.node_id}] {alert.message}", action)
        return made
