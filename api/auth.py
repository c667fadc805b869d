"""Who is calling: the bearer JWT, then the user's current role, department and state.

The token proves the user id; the role and department come from the `users` table (as for
a WebSocket), looked up once and kept in memory. The cache is exact up to listener lag:
every entry is stamped with the version of the `user_changed` topic when it was read, and
any change to any user makes every entry stale (users change rarely; requests are many).
So a 304 answer touches no database, and a user who is deactivated or changes role is
seen as such as soon as this node has read the change.

Verifying a JWT (base64, JSON, HMAC) is the largest piece of Sinal's own work on a 304, so
`TokenCache` keeps each verified token's claims for the rest of its lifetime, keyed by the
token string itself: only a token that verified once is found again, and every hit checks
`exp` against the clock (a cached token expires exactly when it would have). Bounded by
MAX_CACHED_TOKENS; failures are never kept.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import psycopg

from sinal.api.problems import Problem
from sinal.domain.access import Principal
from sinal.domain.db import Database
from sinal.domain.tokens import Claims, TokenError, verify_token

BEARER_CHALLENGE = 'Bearer realm="sinal"'
MAX_CACHED_USERS = 10_000
MAX_CACHED_TOKENS = 10_000


def unauthorized(code: str, detail: str) -> Problem:
    challenge = BEARER_CHALLENGE if code == "auth_required" else (
        f'{BEARER_CHALLENGE}, error="invalid_token", error_description="{code}"')
    return Problem(401, code, detail, headers={"WWW-Authenticate": challenge})


def bearer_token(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`; None when there is no such header."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def verify_bearer(secret: str, header: str | None) -> Claims:
    token = bearer_token(header)
    if token is None:
        raise unauthorized("auth_required", "send Authorization: Bearer <JWT>")
    try:
        return verify_token(secret, token)
    except TokenError as exc:
        raise unauthorized(exc.code, str(exc)) from exc


class TokenCache:
    """Bearer token -> verified Claims, until `exp`."""

    def __init__(self, secret: str, max_entries: int = MAX_CACHED_TOKENS,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.max_entries = max_entries
        self.clock = clock
        self._claims: dict[str, Claims] = {}
        self.verified = 0  # signatures checked (misses)

    def claims(self, header: str | None) -> Claims:
        """The claims of `Authorization: Bearer <token>`, or the 401 Problem."""
        token = bearer_token(header)
        if token is None:
            raise unauthorized("auth_required", "send Authorization: Bearer <JWT>")
        cached = self._claims.get(token)
        if cached is not None:
            if cached.expires_at > self.clock():
                return cached
            del self._claims[token]
        self.verified += 1
        now = self.clock()
        try:
            claims = verify_token(self.secret, token, now=now)
        except TokenError as exc:
            raise unauthorized(exc.code, str(exc)) from exc
        if len(self._claims) >= self.max_entries:
            self._forget(now)
        self._claims[token] = claims
        return claims

    def _forget(self, now: float) -> None:
        """Drop the expired tokens; still full: the oldest half."""
        for token in [t for t, c in self._claims.items() if c.expires_at <= now]:
            del self._claims[token]
        if len(self._claims) >= self.max_entries:
            for token in list(self._claims)[: max(1, len(self._claims) // 2)]:
                del self._claims[token]


class PrincipalCache:
    """user id -> Principal (or None: unknown or inactive), valid while the users topic
    has not moved."""

    def __init__(self, db: Database, users_version: Callable[[], int],
                 max_entries: int = MAX_CACHED_USERS) -> None:
        self.db = db
        self.users_version = users_version
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[int, Principal | None]] = OrderedDict()
        self.lookups = 0

    async def principal(self, claims: Claims) -> Principal:
        version = self.users_version()
        cached = self._entries.get(claims.user_id)
        if cached is not None and cached[0] == version:
            self._entries.move_to_end(claims.user_id)
            found = cached[1]
        else:
            found = await self._lookup(claims.user_id)
            self._entries[claims.user_id] = (version, found)
            self._entries.move_to_end(claims.user_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        if found is None:
            raise unauthorized("auth_failed", "unknown or inactive user")
        return found

    def peek(self, claims: Claims) -> Principal | None:
        """The principal when memory knows it for the current users version (else None:
        `principal()` must look it up, or refuse the caller)."""
        cached = self._entries.get(claims.user_id)
        if cached is None or cached[0] != self.users_version():
            return None
        return cached[1]

    async def _lookup(self, user_id: str) -> Principal | None:
        try:
            uuid.UUID(user_id)
        except ValueError:
            return None
        self.lookups += 1

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            try:
                return conn.execute(
                    "SELECT id::text AS id, role, is_active, department_id::text AS dept "
                    "FROM users WHERE id = %s", (user_id,),
                ).fetchone()
            except psycopg.errors.InvalidTextRepresentation:
                return None

        row = await self.db.run(work)
        if row is None or not row["is_active"]:
            return None
        return Principal(str(row["id"]), str(row["role"]), row["dept"])
