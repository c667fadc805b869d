"""Fixtures for the REST tests: a whole node on loopback (HTTP_PORT=0) and an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from sinal.node.wiring import Node
from tests.api.api_support import Api
from tests.realtime.realtime_support import node_config, users_of


@pytest.fixture
def users(db_url: str) -> dict[str, dict[str, Any]]:
    return users_of(db_url)


@pytest.fixture
def node_settings() -> dict[str, str]:
    """Override in a test module for other settings (values as in the environment)."""
    return {"ENABLE_PERFORMANCE_MONITORING": "false"}


@pytest.fixture
async def node(db_url: str, users: dict[str, Any], node_settings: dict[str, str],
               nursery: trio.Nursery) -> AsyncIterator[Node]:
    running: Node = await nursery.start(Node(node_config(db_url, **node_settings), db_url).run)
    yield running


@pytest.fixture
async def api(node: Node, users: dict[str, Any]) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=20) as client:
        yield Api(client, node, users)
