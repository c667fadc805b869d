"""Who is calling: a bearer token verified to its claims, then the user's current role,
department and state from the `users` table. One `Authenticator` serves the WebSocket
handshake and every REST request, so both accept and refuse exactly the same callers.

TOKENS. Verifying a JWT (base64, JSON, HMAC) is the largest piece of Sinal's own work on a
REST 304, so each verified token's claims are kept for the rest of its lifetime, keyed by
the token string itself: only a token that verified once is found again, and every hit
checks `exp` against the clock (a cached token expires exactly when it would have).
Bounded by MAX_CACHED_TOKENS; failures are never kept.

PRINCIPALS. The token proves the user id; role, department and `is_active` come from the
database, looked up once and kept in memory. Every entry is stamped with the version of
the `user_changed` topic when it was read (a callable the composition root provides), and
any change to any user makes every entry stale (users change rarely; requests are many).
So a 304 answer touches no database, and a user who is deactivated or changes role is
seen as such as soon as this node has read the change.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from sinal.domain.db import Database
from sinal.domain.tokens import Claims, TokenError, verify_token

ROLES = ("requester", "approver_a1", "approver_a2", "approver_a3", "buyer", "admin")
MAX_CACHED_USERS = 10_000
MAX_CACHED_TOKENS = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated, active user as the rules see them."""

    user_id: str
    role: str
    department_id: str | None = None


class AuthError(TokenError):
    """The caller cannot be accepted; `code` is auth_failed or token_expired (documented
    in docs/protocol.md and the README's HTTP codes)."""


def load_principal(conn: psycopg.Connection[Any], user_id: str) -> Principal | None:
    """The user as a principal; None when unknown or inactive (the one user lookup)."""
    try:
        uuid.UUID(user_id)
    except ValueError:
        return None
    row = conn.execute(
        "SELECT id::text AS id, role, is_active, department_id::text AS dept "
        "FROM users WHERE id = %s", (user_id,),
    ).fetchone()
    if row is None:
        return None
    values = row if isinstance(row, dict) else dict(zip(("id", "role", "is_active", "dept"),
                                                        row, strict=True))
    if not values["is_active"]:
        return None
    return Principal(str(values["id"]), str(values["role"]), values["dept"])


class TokenCache:
    """Token -> verified Claims, until `exp`."""

    def __init__(self, secret: str, max_entries: int = MAX_CACHED_TOKENS,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.max_entries = max_entries
        self.clock = clock
        self._claims: dict[str, Claims] = {}
        self.verified = 0  # signatures checked (misses)

    def claims(self, token: str) -> Claims:
        """The token's claims, or TokenError (auth_failed, token_expired)."""
        cached = self._claims.get(token)
        if cached is not None:
            if cached.expires_at > self.clock():
                return cached
            del self._claims[token]
        self.verified += 1
        now = self.clock()
        claims = verify_token(self.secret, token, now=now)
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


class Authenticator:
    """Token -> Principal, for every way in (WebSocket connect, REST bearer)."""

    def __init__(self, db: Database, secret: str, users_version: Callable[[], int], *,
                 max_users: int = MAX_CACHED_USERS, tokens: TokenCache | None = None) -> None:
        self.db = db
        self.tokens = tokens or TokenCache(secret)
        self.users_version = users_version
        self.max_users = max_users
        self._users: OrderedDict[str, tuple[int, Principal | None]] = OrderedDict()
        self.lookups = 0  # database round trips

    async def authenticate(self, token: str, *, user_id: str | None = None,
                           fresh: bool = False) -> Principal:
        """The principal behind `token` (and `user_id`, when the caller also names one);
        AuthError otherwise. psycopg errors pass through: the database is away.
        `fresh` reads the user even when memory has it (a WebSocket session is long: it
        starts from the database's word, not from memory that the listener may not have
        brought up to date yet)."""
        return await self.principal(self.tokens.claims(token), user_id=user_id, fresh=fresh)

    async def principal(self, claims: Claims, *, user_id: str | None = None,
                        fresh: bool = False) -> Principal:
        if user_id is not None and user_id != claims.user_id:
            raise AuthError("auth_failed", "userId does not match the token")
        version = self.users_version()
        cached = None if fresh else self._users.get(claims.user_id)
        if cached is not None and cached[0] == version:
            self._users.move_to_end(claims.user_id)
            found = cached[1]
        else:
            self.lookups += 1
            found = await self.db.run(lambda conn: load_principal(conn, claims.user_id))
            self._users[claims.user_id] = (version, found)
            self._users.move_to_end(claims.user_id)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
        if found is None:
            raise AuthError("auth_failed", "unknown or inactive user")
        return found

    def peek(self, claims: Claims) -> Principal | None:
        """The principal when memory knows it for the current users version (else None:
        `principal()` must look it up, or refuse the caller)."""
        cached = self._users.get(claims.user_id)
        if cached is None or cached[0] != self.users_version():
            return None
        return cached[1]
