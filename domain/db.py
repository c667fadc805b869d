"""PostgreSQL access from Trio.

psycopg's async API is asyncio-only, so ordinary queries run on a psycopg_pool
ConnectionPool in worker threads (`trio.to_thread.run_sync` behind a CapacityLimiter of
the pool's size). `Database.queries` counts every call, so tests can prove that a hot
path (a 304, a fan-out) makes none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar, cast

import psycopg
import trio
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

T = TypeVar("T")

# Who is querying: "http" inside a request (api/fast_reads.py sets it), "" for the actors.
# Tests read `Database.queries_by_scope["http"]` to prove a path makes no query while the
# node's background actors (listener ticks, presence flushes) go on querying.
DB_SCOPE: ContextVar[str] = ContextVar("sinal_db_scope", default="")


class Database:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            name="sinal",
        )
        self.limiter = trio.CapacityLimiter(max_size)
        self.queries = 0
        self.queries_by_scope: Counter[str] = Counter()

    def open(self, wait: bool = True, timeout: float = 30.0) -> None:
        self.pool.open(wait=wait, timeout=timeout)

    def close(self) -> None:
        self.pool.close()

    async def run(self, work: Callable[[psycopg.Connection[dict[str, object]]], T]) -> T:
        """Run `work(conn)` in a worker thread with a pooled autocommit connection.

        Use `with conn.transaction():` inside `work` for multi-statement transactions.
        """
        self.queries += 1
        self.queries_by_scope[DB_SCOPE.get()] += 1

        def in_thread() -> T:
            with self.pool.connection() as conn:
                return work(cast("psycopg.Connection[dict[str, object]]", conn))

        return await trio.to_thread.run_sync(in_thread, limiter=self.limiter)

    async def fetch_all(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()
                        ) -> list[dict[str, object]]:
        def work(conn: psycopg.Connection[dict[str, object]]) -> list[dict[str, object]]:
            return conn.execute(sql, params).fetchall()

        return await self.run(work)

    async def fetch_one(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()
                        ) -> dict[str, object] | None:
        def work(conn: psycopg.Connection[dict[str, object]]) -> dict[str, object] | None:
            return conn.execute(sql, params).fetchone()

        return await self.run(work)
