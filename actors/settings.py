"""The settings the realtime actors use, as plain values (the composition root, node/,
builds them from the node's configuration; actors never read settings themselves)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RealtimeSettings:
    heartbeat_interval_ms: int = 30_000  # WEBSOCKET_HEARTBEAT_INTERVAL
    connection_timeout_ms: int = 60_000  # WEBSOCKET_CONNECTION_TIMEOUT
    max_connections: int = 1000  # MAX_CONCURRENT_CONNECTIONS
    rate_limit_per_minute: int = 100  # RATE_LIMIT_REQUESTS_PER_MINUTE
    allowed_origins: frozenset[str] | None = None  # WEBSOCKET_CORS_ORIGIN; None: any
    ring_size: int = 4096  # changes each topic keeps for replay
    login_timeout_ms: int = 5_000  # WEBSOCKET_LOGIN_TIMEOUT: upgrade to welcome
    prelogin_max: int = 100  # sockets waiting to log in, node-wide (WEBSOCKET_PRELOGIN_SHARE)
    prelogin_per_address: int = 20  # WEBSOCKET_PRELOGIN_PER_ADDRESS
    trusted_proxies: str = ""  # TRUSTED_PROXIES: whose X-Forwarded-For names the client

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats."""
        return self.heartbeat_interval_ms / 1000

    @property
    def login_timeout(self) -> float:
        """Seconds a socket may take from its upgrade to its `welcome`."""
        return self.login_timeout_ms / 1000

    @property
    def connection_timeout(self) -> float:
        """Seconds of silence after which a socket is closed."""
        return self.connection_timeout_ms / 1000
