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

SESSIONS. A WebSocket session is long, so it starts from the database's word, never from
memory (which may lag the database by the listener's lag): `Authenticator.start_session`
reads the user afresh. It is the connect path's one round trip: a single statement
(`load_sessions`) reads the user, takes the notifications kept for them (marking them
delivered) and reads the change log's head, all from one snapshot, for every connect of
the same scheduler round at once. The principal read refreshes the cache like any lookup.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import trio

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


# One statement, one snapshot, for every user of a batch of connects: the users; the
# notifications kept for each active one (at most `limit` each), marked delivered; the
# change log's head. One result row per (user, kept notification), one row with null
# notification columns for a user without any, and one row with a null user when none of
# the users exists (it carries the head).
_SESSIONS = """
WITH ids AS (
    SELECT DISTINCT unnest(%(users)s::uuid[]) AS id
), u AS (
    SELECT users.id, users.role, users.is_active, users.department_id
      FROM users JOIN ids USING (id)
), taken AS (
    UPDATE notifications AS n SET delivered_at = now()
      FROM (SELECT k.id FROM u, LATERAL (
                SELECT id FROM notifications
                 WHERE user_id = u.id AND delivered_at IS NULL
                 ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS k
             WHERE u.is_active) AS pick
     WHERE n.id = pick.id
    RETURNING n.user_id, n.id, n.kind, n.message, n.action, n.sound, n.created_at
)
SELECT u.id::text AS user_id, u.role, u.is_active, u.department_id::text AS dept,
       h.position AS head, t.id, t.kind, t.message, t.action, t.sound, t.created_at
  FROM change_log_head AS h
  LEFT JOIN u ON true
  LEFT JOIN taken AS t ON t.user_id = u.id
 ORDER BY u.id, t.id
"""

KEPT_LIMIT = 500  # kept notifications handed out at one connect
_KEPT_COLUMNS = ("id", "kind", "message", "action", "sound", "created_at")


@dataclass(frozen=True, slots=True)
class SessionStart:
    """What a WebSocket session starts from, read in one snapshot: the principal (None:
    unknown or inactive), the notifications kept for the user (now marked delivered,
    oldest first) and the change log's head."""

    principal: Principal | None
    kept: tuple[dict[str, Any], ...]
    head: int


def load_sessions(conn: psycopg.Connection[Any], user_ids: list[str],
                  limit: int = KEPT_LIMIT) -> dict[str, SessionStart]:
    """The connect path's one statement (`_SESSIONS`), for every user of a batch of
    connects; a user id that is not a uuid, or not a user, maps to no principal."""
    canonical: dict[str, str] = {}  # as given -> as the database spells it
    for user_id in user_ids:
        try:
            canonical[user_id] = str(uuid.UUID(user_id))
        except ValueError:
            pass
    cursor = conn.execute(_SESSIONS, {"users": list(canonical.values()), "limit": limit})
    rows = cursor.fetchall()
    if rows and not isinstance(rows[0], dict):  # a connection without dict rows
        names = [column.name for column in cursor.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in rows]
    head = int(rows[0]["head"])
    found: dict[str, tuple[Principal | None, list[dict[str, Any]]]] = {}
    for row in rows:
        if row["user_id"] is None:
            continue
        entry = found.get(row["user_id"])
        if entry is None:
            principal = (Principal(str(row["user_id"]), str(row["role"]), row["dept"])
                         if row["is_active"] else None)
            entry = found[row["user_id"]] = (principal, [])
        if row["id"] is not None:
            entry[1].append({k: row[k] for k in _KEPT_COLUMNS})
    out: dict[str, SessionStart] = {}
    for user_id in user_ids:
        principal, kept = found.get(canonical.get(user_id, ""), (None, []))
        out[user_id] = SessionStart(principal, tuple(kept), head)
    return out


@dataclass(eq=False)
class _Batch:
    """Connects that share one session-start statement."""

    users: list[str] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    starts: dict[str, SessionStart] | None = None
    error: str | None = None


def release_kept(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    """Undo taking: the session that took these could not start after all."""
    conn.execute("UPDATE notifications SET delivered_at = NULL WHERE id = ANY(%s)", (ids,))


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
        self.batched = 0  # session starts served by those round trips
        self._forming: _Batch | None = None

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
            self._remember(claims.user_id, version, found)
        if found is None:
            raise AuthError("auth_failed", "unknown or inactive user")
        return found

    async def start_session(self, claims: Claims, *, user_id: str | None = None,
                            kept_limit: int = KEPT_LIMIT) -> SessionStart:
        """A WebSocket session's start, in one round trip (`load_sessions`): the user read
        afresh, never from memory. Connects that arrive together share the round trip:
        the first one waits for the others of this scheduler round, then runs one
        statement for all of them (a connect storm costs one worker-thread hop per batch,
        not per connect). AuthError when unknown or inactive (then nothing was taken);
        a database error reaches every member of the batch as psycopg.OperationalError."""
        if user_id is not None and user_id != claims.user_id:
            raise AuthError("auth_failed", "userId does not match the token")
        version = self.users_version()
        batch = self._forming
        if batch is None:
            batch = self._forming = _Batch()
            batch.users.append(claims.user_id)
            await trio.lowlevel.cancel_shielded_checkpoint()  # the others of this round join
            self._forming = None
            users = batch.users
            self.lookups += 1
            self.batched += len(users)
            try:
                batch.starts = await self.db.run(
                    lambda conn: load_sessions(conn, users, kept_limit))
            except psycopg.Error as exc:
                batch.error = str(exc)
                raise
            finally:
                batch.done.set()
        else:
            batch.users.append(claims.user_id)
            await batch.done.wait()
            if batch.starts is None:
                raise psycopg.OperationalError(batch.error or "session start failed")
        start = batch.starts[claims.user_id]
        if start.kept:  # the same user twice in one batch: the kept ones go to one socket
            batch.starts[claims.user_id] = SessionStart(start.principal, (), start.head)
        self._remember(claims.user_id, version, start.principal)
        if start.principal is None:
            raise AuthError("auth_failed", "unknown or inactive user")
        return start

    def _remember(self, user: str, version: int, found: Principal | None) -> None:
        self._users[user] = (version, found)
        self._users.move_to_end(user)
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)

    def peek(self, claims: Claims) -> Principal | None:
        """The principal when memory knows it for the current users version (else None:
        `principal()` must look it up, or refuse the caller)."""
        cached = self._users.get(claims.user_id)
        if cached is None or cached[0] != self.users_version():
            return None
        return cached[1]
