"""The HTTP rules every answer follows, shared by the Quart app (api/app.py) and the fast
read path (api/fast_reads.py): CORS origins and gzip.

CORS: WEBSOCKET_CORS_ORIGIN lists the browser origins that get
`Access-Control-Allow-Origin` (with `Vary: Origin`); `*` allows any origin (and needs no
`Vary`). GZIP: see `wants_gzip`. Compression sets the gzip header's MTIME to 0 (RFC 1952:
no time stamp), so the same body always compresses to the same bytes.
"""

from __future__ import annotations

import gzip
from collections.abc import Collection

GZIP_MIN_BYTES = 1024
CORS_ALLOW_HEADERS = "Authorization, Content-Type, If-None-Match"
CORS_EXPOSE_HEADERS = "ETag, Retry-After, Location, WWW-Authenticate"


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
