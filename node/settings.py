"""From the node's settings (node/config.py) to the plain values each part takes: the
realtime actors' `RealtimeSettings` and the metrics service's alert thresholds. (The HTTP
side's settings are built in node/http.py.)"""

from __future__ import annotations

from sinal.actors.metrics_service import AlertThresholds
from sinal.actors.settings import RealtimeSettings
from sinal.api.http_rules import allowed_origins
from sinal.node.config import Config


def realtime_settings(config: Config) -> RealtimeSettings:
    return RealtimeSettings(
        heartbeat_interval_ms=config.websocket_heartbeat_interval,
        connection_timeout_ms=config.websocket_connection_timeout,
        max_connections=config.max_concurrent_connections,
        rate_limit_per_minute=config.rate_limit_requests_per_minute,
        allowed_origins=_origins(config.websocket_cors_origin),
        login_timeout_ms=config.websocket_login_timeout,
        prelogin_max=max(1, config.max_concurrent_connections
                         * config.websocket_prelogin_share // 100),
        prelogin_per_address=config.websocket_prelogin_per_address,
        trusted_proxies=config.trusted_proxies,
    )


def _origins(setting: str) -> frozenset[str] | None:
    origins = allowed_origins(setting)
    return None if origins is None else frozenset(origins)


def alert_thresholds(config: Config) -> AlertThresholds:
    """The seed's AlertManager limits (8.2); the latency one is a setting."""
    return AlertThresholds(max_latency_ms=float(config.performance_alert_threshold_ms),
                           max_connections=config.max_concurrent_connections * 0.8)
