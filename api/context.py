"""What every endpoint shares: the settings, the realtime view, the caller, JSON and problem
responses, the database, the list reads.

One `ApiContext` per app, built from exactly what `create_app` is given (api/app.py): the
HTTP side's settings, the database, the authenticator, the read-only view of the realtime
side (api/realtime.py) and the request statistics. Responses are always made with
`app.response_class` (in Quart-Trio a body-less `quart.Response(status=304)` raises "no
running event loop").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from quart import Response, g
from quart_trio import QuartTrio

from sinal.api.auth import unauthorized
from sinal.api.freshness import CommitFence
from sinal.api.http_rules import dump_json
from sinal.api.list_reads import ListReads
from sinal.api.problems import PROBLEM_CONTENT_TYPE, Problem
from sinal.api.realtime import RealtimeView
from sinal.api.response_cache import ResponseCache
from sinal.api.settings import ApiSettings
from sinal.api.stats import HttpMetrics, RequestStats
from sinal.domain.audit import AuditEvent, AuditLog
from sinal.domain.changes import sequence_changes
from sinal.domain.db import Database
from sinal.domain.principals import Authenticator, AuthError, Principal
from sinal.domain.ratelimit import RateLimiter

__all__ = ["ApiContext", "dump_json"]

log = logging.getLogger("sinal.api")
T = TypeVar("T")
FORGET_IDLE_EVERY = 4096
SEQUENCE_ALL = 2**31 - 1  # the fence numbers every committed change, however many


@dataclass
class ApiContext:
    settings: ApiSettings
    app: QuartTrio
    db: Database
    auth: Authenticator
    realtime: RealtimeView
    limiter: RateLimiter
    responses: ResponseCache
    fence: CommitFence
    stats: RequestStats
    metrics: HttpMetrics
    audit: AuditLog
    charged: int = 0  # requests charged to the rate limiter
    reads: ListReads = field(init=False)

    def __post_init__(self) -> None:
        self.reads = ListReads(self.settings, self.realtime, self.responses, self.fence,
                               self.run)

    @classmethod
    def build(cls, app: QuartTrio, settings: ApiSettings, db: Database,
              authenticator: Authenticator, realtime: RealtimeView,
              stats: RequestStats, audit: AuditLog,
              limiter: RateLimiter | None = None) -> ApiContext:
        async def sequence() -> int:
            return await db.run(lambda conn: sequence_changes(conn, SEQUENCE_ALL))

        responses = ResponseCache(settings.cache_max_bytes, settings.cache_ttl_seconds,
                                  compression_level=settings.compression_level,
                                  clock=trio.current_time, version_of=realtime.topic_version)
        fence = CommitFence(sequence, realtime)
        return cls(
            settings=settings,
            app=app,
            db=db,
            auth=authenticator,
            realtime=realtime,
            limiter=limiter or RateLimiter(settings.rate_limit_per_minute,
                                           clock=trio.current_time),
            responses=responses,
            fence=fence,
            stats=stats,
            metrics=HttpMetrics(stats, realtime.collectors(), responses, fence),
            audit=audit,
        )

    def charge(self, key: str) -> bool:
        """Charge one request to `key`'s rate-limit bucket; False when it is empty."""
        self.charged += 1
        if self.charged % FORGET_IDLE_EVERY == 0:
            self.limiter.forget_idle()  # full buckets: memory stays bounded by active callers
        return self.limiter.allow(key)

    # --- responses -------------------------------------------------------------------------

    def json(self, body: Any, status: int = 200,
             headers: Mapping[str, str] | None = None) -> Response:
        response: Response = self.app.response_class(
            dump_json(body), status=status, headers=dict(headers or {}),
            content_type="application/json")
        return response

    def problem(self, problem: Problem) -> Response:
        response: Response = self.app.response_class(
            dump_json(problem.body()), status=problem.status, headers=problem.headers,
            content_type=PROBLEM_CONTENT_TYPE)
        return response

    def empty(self, status: int, headers: Mapping[str, str] | None = None) -> Response:
        response: Response = self.app.response_class(b"", status=status,
                                                     headers=dict(headers or {}))
        response.headers.pop("Content-Type", None)
        if status in (204, 304):
            response.headers.pop("Content-Length", None)
        return response

    # --- the caller --------------------------------------------------------------------------

    async def caller(self) -> Principal:
        """The authenticated caller (before_request verified the token, or kept why not)."""
        claims = getattr(g, "claims", None)
        if claims is None:
            raise g.auth_problem
        try:
            principal = await self.auth.principal(claims)
        except AuthError as exc:
            raise unauthorized(exc.code, str(exc)) from exc
        g.principal = principal
        return principal

    def operator(self) -> bool:
        """A short-lived operator token (minted by `sinal status` with JWT_SECRET)."""
        claims = getattr(g, "claims", None)
        return claims is not None and claims.scope == "operator"

    async def admin(self) -> Principal:
        principal = await self.caller()
        if principal.role != "admin":
            raise Problem(403, "forbidden", "admins only")
        return principal

    # --- the audit trail ---------------------------------------------------------------------

    def audit_event(self, action: str, path: str, details: Mapping[str, Any],
                    actor: Principal | None = None) -> None:
        """One `http` event for the audit trail (domain/audit.py); never blocks. `actor` is a
        user Sinal knows (a verified token's subject that may not exist goes in details)."""
        self.audit.record(AuditEvent("http", path[:200], action,
                                     actor.user_id if actor is not None else None,
                                     dict(details)))

    # --- the database ------------------------------------------------------------------------

    async def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`db.run`, with an unreachable database as 503 database_unavailable."""
        try:
            return await self.db.run(work)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("database unavailable for %s: %s", getattr(work, "__name__", "work"),
                        exc)
            raise Problem(503, "database_unavailable",
                          "the database does not answer; retry later",
                          headers={"Retry-After": "5"}) from exc
