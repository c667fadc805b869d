"""Helpers for the REST tests: a client that speaks as a demo user, and direct SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import trio

from sinal.node.wiring import Node
from tests.realtime.realtime_support import token_for

# demo users (engine/demo.py) by role
REQUESTER = "ana@sinal.dev"  # TI
OTHER_REQUESTER = "bruno@sinal.dev"  # Operações
APPROVER = {1: "carla@sinal.dev", 2: "diego@sinal.dev", 3: "elisa@sinal.dev"}
BUYER = "fabio@sinal.dev"
ADMIN = "admin@sinal.dev"


@dataclass
class Api:
    client: httpx.AsyncClient
    node: Node
    users: dict[str, dict[str, Any]]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(self.users[who])}"}

    async def get(self, path: str, who: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {**(self.auth(who) if who else {}), **kwargs.pop("headers", {})}
        return await self.client.get(path, headers=headers, **kwargs)

    async def post(self, path: str, who: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {**(self.auth(who) if who else {}), **kwargs.pop("headers", {})}
        return await self.client.post(path, headers=headers, **kwargs)

    async def put(self, path: str, who: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {**(self.auth(who) if who else {}), **kwargs.pop("headers", {})}
        return await self.client.put(path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, who: str = ADMIN, status: int = 200,
                 **kwargs: Any) -> Any:
        response = await getattr(self, method)(path, who, **kwargs)
        assert response.status_code == status, (response.status_code, response.text)
        return response.json()

    async def all_rows(self, path: str, who: str = ADMIN, limit: int = 100,
                       **params: Any) -> tuple[dict[str, dict[str, Any]], int]:
        """Every page of a list: rows by id and the offset to resume from."""
        rows: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
            page = await self.ok("get", path, who, params=query)
            for row in page["data"]:
                assert row["id"] not in rows, "a row appeared on two pages"
                rows[row["id"]] = row
            cursor = page["nextCursor"]
            if cursor is None:
                return rows, page["offset"]

    async def sql(self, statement: str, params: Any = ()) -> list[Any]:
        def work() -> list[Any]:
            with psycopg.connect(self.node.database_url, autocommit=True) as conn:
                cur = conn.execute(statement, params)
                return cur.fetchall() if cur.description else []

        return await trio.to_thread.run_sync(work)

    async def settle(self) -> None:
        """Wait until the node's listener has published everything committed so far."""
        rows = await self.sql("SELECT sinal_sequence_changes()")
        head = int(rows[0][0])
        assert self.node.hub is not None
        with trio.fail_after(10):
            for topic in self.node.hub.topics.values():
                await topic.wait_head(head)


def apply_delta(state: dict[str, dict[str, Any]], delta: list[dict[str, Any]]
                ) -> dict[str, dict[str, Any]]:
    out = dict(state)
    for entry in delta:
        row = {k: v for k, v in entry.items() if k != "_operation"}
        if entry["_operation"] == "delete":
            out.pop(row["id"], None)
        else:
            out[row["id"]] = row
    return out
