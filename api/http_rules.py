"""The HTTP rules every answer follows, shared by the Quart app (api/app.py) and the fast
read path (api/fast_reads.py): JSON bodies, CORS origins and gzip.

JSON: compact, UTF-8, datetimes as ISO 8601, decimals as numbers. CORS:
WEBSOCKET_CORS_ORIGIN lists the browser origins that get `Access-Control-Allow-Origin`
(with `Vary: Origin`); `*` allows any origin (and needs no `Vary`). GZIP: see
`wants_gzip`. Compression sets the gzip header's MTIME to 0 (RFC 1952: no time stamp), so
the same body always compresses to the same bytes.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Collection
from datetime import date, datetime
from decimal import Decimal
from typing import Any

GZIP_MIN_BYTES = 1024
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match"
CORS_EXPOSE_HEADERS = "ETag, Retry-After, Location, WWW-Authenticate"


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dump_json(body: Any) -> bytes:
    return json.dumps(body, default=_json_default, ensure_ascii=False,
                      separators=(",", ":")).encode()


def allowed_origins(setting: str) -> set[str] | None:
    """WEBSOCKET_CORS_ORIGIN as a set; None means any origin (`*`)."""
    origins = {o.strip().rstrip("/") for o in setting.split(",") if o.strip()}
    return None if "*" in origins else origins


def cors_origin(origin: str | None, origins: Collection[str] | None) -> str | None:
    """The `Access-Control-Allow-Origin` value for a request's `Origin`, or None."""
    if not origin:
        return None
    if origins is None:
        return "*"
    return origin if origin.rstrip("/") in origins else None


def accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def wants_gzip(enabled: bool, compress: str | None, accept_encoding: str | None,
               size: int) -> bool:
    """ENABLE_COMPRESSION off: never. `?compress=true`: always; `?compress=false`: never.
    Otherwise when the client accepts gzip and the body is over 1 KB."""
    if not enabled or size == 0:
        return False
    flag = (compress or "").strip().lower()
    if flag in ("true", "1", "yes"):
        return True
    if flag in ("false", "0", "no"):
        return False
    return size > GZIP_MIN_BYTES and accepts_gzip(accept_encoding)


def gzip_body(body: bytes, level: int) -> bytes:
    return gzip.compress(body, compresslevel=level, mtime=0)
