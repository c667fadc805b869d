"""The README's WebSocket example is a complete program that stays connected: it is cut
from README.md and run, as a subprocess, against a live node (issue #10, 7)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from sinal.domain.principals import Principal
from sinal.domain.workflow import create_request
from sinal.node.wiring import Node
from tests.realtime.realtime_support import node_config, token_for

README = Path(__file__).resolve().parents[2] / "README.md"
HEARTBEAT_MS = 100  # the node's interval: the example must follow what `welcome` says


def readme_example() -> str:
    """The Python block of the README's section "Realtime over WebSocket"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Realtime over WebSocket", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "one Python block expected in the WebSocket section"
    return str(blocks[0])


@pytest.fixture
def example(tmp_path: Path) -> Path:
    code = readme_example()
    assert "trio.run(" in code and '"heartbeat"' in code
    script = tmp_path / "watch.py"
    script.write_text(code, encoding="utf-8")
    return script


async def test_readme_websocket_example_connects_beats_and_prints_changes(
        example: Path, users: dict[str, Any], db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ana = users["ana@sinal.dev"]
    config = node_config(db_url, WEBSOCKET_HEARTBEAT_INTERVAL=str(HEARTBEAT_MS))
    lines: list[str] = []
    send_line, receive_line = trio.open_memory_channel[str](1000)

    async def read_lines(stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                await send_line.send(line.decode())

    async def wait_for(text: str) -> str:
        async for line in receive_line:
            lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"the example ended before printing {text!r}: {lines}")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node_scope = trio.CancelScope()

            async def run_node(task_status: trio.TaskStatus[Node]) -> None:
                with node_scope:
                    await Node(config, db_url).run(task_status=task_status)

            node: Node = await nursery.start(run_node)
            # every heartbeat frame a connection receives goes to the presence writer
            assert node.hub is not None and node.hub.presence is not None
            beats_received = trio.Event()
            beats: list[str] = []

            def heartbeat(session_id: str) -> None:
                beats.append(session_id)
                if len(beats) >= 3:
                    beats_received.set()

            monkeypatch.setattr(node.hub.presence, "heartbeat", heartbeat)
            process = await trio.lowlevel.open_process(
                [sys.executable, "-u", str(example), token_for(ana), node.websocket_url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(read_lines, process.stdout)
                await wait_for("'event': 'subscribed'")
                assert "'event': 'welcome'" in lines[0]
                # its heartbeats reach the server, at the interval the welcome announced
                # (without them the server cuts it after connectionTimeout: 4302)
                await beats_received.wait()

                def write() -> str:
                    with psycopg.connect(db_url, autocommit=True) as db:
                        principal = Principal(ana["id"], ana["role"], ana["department_id"])
                        return str(create_request(db, principal, title="README",
                                                  amount=10)["id"])

                request_id = await trio.to_thread.run_sync(write)
                update = await wait_for("'event': 'data_update'")
                assert request_id in update and "'README'" in update
                assert process.returncode is None  # still connected
                # the node stops: the example says why, and ends without a traceback
                node_scope.cancel()
                await wait_for("'code': 'server_shutdown'")
                closed = await wait_for("closed:")
                assert "4501" in closed
                assert await process.wait() == 0
                errors = (await process.stderr.receive_some()).decode()
                assert "Traceback" not in errors, errors
                assert not any("'event': 'heartbeat'" in line for line in lines)
            finally:
                if process.returncode is None:
                    process.terminate()
                    await process.wait()


async def test_readme_websocket_example_reports_a_refused_token(
        example: Path, node: Node) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, str(example), "not-a-token", node.websocket_url],
            capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert "'event': 'error'" in result.stdout.decode()
    assert "'code': 'auth_failed'" in result.stdout.decode()
    assert b"Traceback" not in result.stderr
