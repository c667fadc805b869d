"""`sinal status` prints the supervisor tree of a running node (operator token from
JWT_SECRET); the same token opens nothing else."""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
import trio

from sinal.domain.tokens import mint_token
from sinal.node.config import SETTINGS
from sinal.node.wiring import Node
from tests.realtime.realtime_support import SECRET


async def test_status_command_prints_the_tree(node: Node, users: dict[str, Any]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    env["JWT_SECRET"] = SECRET
    result = await trio.run_process(
        [sys.executable, "-m", "sinal.node.cli", "status", "--url", node.http_url],
        env=env, capture_stdout=True, capture_stderr=True, check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    for name in ("sinal [supervisor one_for_one", "realtime [supervisor rest_for_one",
                 "database_listener [database_listener] running", "connections [pool",
                 "topic:purchase_request_changed [topic] running", "listener: position"):
        assert name in out, name
    wrong = await trio.run_process(
        [sys.executable, "-m", "sinal.node.cli", "status", "--url", node.http_url],
        env={**env, "JWT_SECRET": "w" * 40}, capture_stdout=True, capture_stderr=True,
        check=False)
    assert wrong.returncode == 1 and b"401" in wrong.stderr


async def test_operator_token_opens_only_the_status_endpoint(node: Node) -> None:
    token = mint_token(SECRET, "operator", "admin", ttl_seconds=60, scope="operator")
    headers = {"Authorization": f"Bearer {token}"}

    def get(path: str) -> int:
        return httpx.get(node.http_url + path, headers=headers, timeout=10).status_code

    assert await trio.to_thread.run_sync(get, "/api/supervisor") == 200
    assert await trio.to_thread.run_sync(get, "/api/purchase-requests") == 401
