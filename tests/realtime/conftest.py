from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from sinal.node.wiring import Node
from tests.realtime.realtime_support import node_config, users_of


@pytest.fixture
def users(db_url: str) -> dict[str, dict[str, Any]]:
    return users_of(db_url)


@pytest.fixture
async def node(db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> AsyncIterator[Node]:
    running: Node = await nursery.start(Node(node_config(db_url), db_url).run)
    yield running
