"""JWTs (HS256 with JWT_SECRET): minted by `sinal token` for development, verified by the
WebSocket handshake and the REST API. Claims: sub (user id), role, iat, exp.

`exp` (and `iat`, when present) must be JSON numbers (RFC 7519 NumericDate): PyJWT alone
would take "1700000000", a numeric string, as a date; here anything but a finite number
is auth_failed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"


class TokenError(Exception):
    """A token that cannot be accepted. `code` is the documented protocol/HTTP error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    role: str
    expires_at: int
    scope: str = ""  # "operator": `sinal status` (the status endpoint only, no user behind it)


def mint_token(secret: str, user_id: str, role: str, ttl_seconds: int = 3600,
               now: float | None = None, scope: str = "") -> str:
    issued = int(time.time() if now is None else now)
    payload: dict[str, object] = {"sub": user_id, "role": role, "iat": issued,
                                  "exp": issued + ttl_seconds}
    if scope:
        payload["scope"] = scope
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str, now: float | None = None) -> Claims:
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenError("auth_failed", "missing or oversized token")
    try:
        _numeric_dates(jwt.decode(token, options={"verify_signature": False}))
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"], "verify_exp": now is None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "token expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("auth_failed", f"invalid token: {exc}") from exc
    _numeric_dates(payload)
    if now is not None and int(payload["exp"]) <= now:
        raise TokenError("token_expired", "token expired")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("auth_failed", "token has no subject")
    return Claims(user_id=sub, role=str(payload.get("role", "")), expires_at=int(payload["exp"]),
                  scope=str(payload.get("scope", "")))


def _numeric_dates(payload: Any) -> None:
    """`exp` and `iat` as JSON numbers (not booleans, strings or infinities)."""
    if not isinstance(payload, dict):
        raise TokenError("auth_failed", "invalid token: the payload is not a JSON object")
    for name in ("exp", "iat"):
        if name not in payload:
            continue
        value = payload[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise TokenError("auth_failed", f"invalid token: {name} must be a number")
