"""web/sinal-client.js, tested by Node's own test runner against a live node.

The node runs here (in-process, loopback, its own database); `node --test` runs the files
in tests/browser/js/ with the node's URLs and one token per demo role in the environment.
Heartbeats are short (100 ms, timeout 500 ms) so that a client that did not send them
would be closed within the test. A failing JavaScript test fails this test, with the
runner's report as the message.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from sinal.node.wiring import Node
from tests.realtime.realtime_support import node_config, token_for, users_of

JS_TESTS = sorted((Path(__file__).parent / "js").glob("*.test.mjs"))
ROLES = ("requester", "approver_a1", "approver_a2", "approver_a3", "buyer", "admin")


@pytest.fixture
def users(db_url: str) -> dict[str, dict[str, Any]]:
    return users_of(db_url)


@pytest.fixture
async def node(db_url: str, users: dict[str, Any], nursery: trio.Nursery) -> Node:
    config = node_config(db_url, WEBSOCKET_HEARTBEAT_INTERVAL="100",
                         WEBSOCKET_CONNECTION_TIMEOUT="500",
                         RATE_LIMIT_REQUESTS_PER_MINUTE="1000000",
                         ENABLE_PERFORMANCE_MONITORING="false")
    running: Node = await nursery.start(Node(config, db_url).run)
    return running


def tokens_by_role(users: dict[str, dict[str, Any]]) -> dict[str, str]:
    first: dict[str, str] = {}
    for email in sorted(users):
        user = users[email]
        first.setdefault(user["role"], token_for(user))
    assert set(first) == set(ROLES)
    return first


async def test_sinal_client_js_against_a_live_node(node: Node, users: dict[str, Any]) -> None:
    executable = shutil.which("node")
    assert executable, "Node.js 20 (node) is needed for the JavaScript client's tests"
    assert JS_TESTS, "no tests/browser/js/*.test.mjs"
    env = {**os.environ, "SINAL_HTTP_URL": node.http_url, "SINAL_WS_URL": node.websocket_url,
           "SINAL_TOKENS": json.dumps(tokens_by_role(users)), "NODE_NO_WARNINGS": "1"}
    with trio.fail_after(120):
        done = await trio.run_process(
            [executable, "--experimental-websocket", "--test", "--test-reporter=spec",
             *map(str, JS_TESTS)],
            env=env, capture_stdout=True, capture_stderr=True, check=False)
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, report
    assert "ℹ fail 0" in report and "ℹ skipped 0" in report and "ℹ pass 0" not in report, report
    print(report)
