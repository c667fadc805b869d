"""Fixtures for the REST tests: a whole node on loopback (HTTP_PORT=0) and an httpx client.

``import api`` must find the package, not this folder: pytest puts ``tests/`` on
sys.path, where ``api`` would be a namespace package; the repository root goes first.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_imported = sys.modules.get("api")
if _imported is not None and getattr(_imported, "__file__", None) is None:
    del sys.modules["api"]

import httpx  # noqa: E402
import pytest  # noqa: E402
import trio  # noqa: E402

from engine.node import Node  # noqa: E402
from tests.api.api_support import Api  # noqa: E402
from tests.realtime.realtime_support import node_config, users_of  # noqa: E402


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
