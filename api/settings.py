"""The settings the HTTP side uses, as plain values (the composition root, node/http.py,
builds them from the node's configuration; api/ never reads settings itself)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApiSettings:
    node_id: str = ""  # SINAL_NODE_ID, else host-pid
    allowed_origins: frozenset[str] | None = None  # WEBSOCKET_CORS_ORIGIN; None: any
    rate_limit_per_minute: int = 100  # RATE_LIMIT_REQUESTS_PER_MINUTE
    cache_max_bytes: int = 100 * 2**20  # CACHE_MAX_SIZE_MB
    cache_ttl_seconds: float = 3600  # CACHE_TTL_SECONDS; 0 turns the response cache off
    compression: bool = True  # ENABLE_COMPRESSION
    compression_level: int = 6  # COMPRESSION_LEVEL
    delta_updates: bool = True  # ENABLE_DELTA_UPDATES: `?since=` answers a delta
    smart_polling: bool = True  # ENABLE_SMART_POLLING: ETags and 304s
    max_connections: int = 1000  # MAX_CONCURRENT_CONNECTIONS (health judges against it)
    development: bool = False  # SINAL_ENV=development: the demo login of the pages exists
    trusted_proxies: str = ""  # TRUSTED_PROXIES: whose X-Forwarded-For names the client
