"""`sinal serve --workers 2`: two processes on the same two ports (SO_REUSEPORT), both
answering; a worker killed with -9 is started again by the parent while clients
reconnect and resume with nothing lost; SIGTERM drains every worker (server_shutdown)."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest
import trio

from sinal.domain.tokens import mint_token
from tests.cluster.process_support import (
    ResumingClient,
    clean_env,
    clients_under_writes,
    log_head,
    poll_until,
    sinal_serve,
)
from tests.realtime.realtime_support import SECRET, token_for, users_of


@pytest.mark.slow
async def test_two_workers_share_the_ports_and_survive_a_kill(
        db_url: str, redis_url: str, redis_prefix: str) -> None:
    users = users_of(db_url)
    env = clean_env(DATABASE_URL=db_url, REDIS_URL=redis_url, SINAL_REDIS_PREFIX=redis_prefix,
                    SINAL_NODE_ID="t")
    async with sinal_serve(["--workers", "2"], env) as serving:
        await serving.wait_line(r"worker t-w1 started")
        assert await serving.answering_nodes({"t-w0", "t-w1"}) == {"t-w0", "t-w1"}

        token = token_for(users["admin@sinal.dev"])
        async with clients_under_writes(db_url, serving.ws_url, token, rows=80,
                                        first=60) as (clients, _):
            victim = serving.pids("t-w0")[-1]
            os.kill(victim, signal.SIGKILL)
            await serving.wait_line(r"worker t-w0 exited with code -9")
            with trio.fail_after(60):  # started again, as a new process
                while serving.pids("t-w0")[-1] == victim:
                    await serving.wait_line(r"worker t-w0 started",
                                            count=len(serving.pids("t-w0")) + 1)
            assert len(serving.pids("t-w0")) == 2, "\n".join(serving.lines)
        assert sum(c.sessions for c in clients) > len(clients)  # some were on the victim
        assert await serving.answering_nodes({"t-w0", "t-w1"}) == {"t-w0", "t-w1"}

        # `GET /api/supervisor` (what `sinal status` prints) shows every worker
        operator = mint_token(SECRET, "operator", "admin", ttl_seconds=60, scope="operator")

        def status() -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(
                serving.http_url + "/api/supervisor", timeout=10,
                headers={"Authorization": f"Bearer {operator}"}).json()
            return body

        with trio.fail_after(30):
            nodes: set[str] = set()
            while nodes != {"t-w0", "t-w1"}:
                nodes = set((await trio.to_thread.run_sync(status))["cluster"]["nodes"])
                await trio.sleep(0 if nodes == {"t-w0", "t-w1"} else 0.1)


@pytest.mark.slow
async def test_sigterm_drains_every_worker(db_url: str) -> None:
    users = users_of(db_url)
    env = clean_env(DATABASE_URL=db_url, SINAL_NODE_ID="d", SINAL_DRAIN_TIMEOUT="300")
    async with sinal_serve(["--workers", "2"], env) as serving:
        await serving.answering_nodes({"d-w0", "d-w1"})
        start = await trio.to_thread.run_sync(log_head, db_url)
        token = token_for(users["ana@sinal.dev"])
        clients = [ResumingClient(serving.ws_url, token, start) for _ in range(4)]
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(c.run, done)
            await poll_until(lambda: all(c.sessions for c in clients))
            serving.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                code = await serving.process.wait()
            done.set()
        assert code == 0
        assert all(c.shutdowns == 1 for c in clients), [c.shutdowns for c in clients]
        assert not any("exited with code" in line for line in serving.lines), serving.lines
