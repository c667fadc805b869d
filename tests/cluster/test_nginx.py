"""Two nodes behind the real nginx, with the repository's nginx.conf rendered for local
ports (node/localcluster.py) and Redis: REST and the WebSocket upgrade through nginx,
X-Forwarded-For believed only from the trusted proxy, and faults (kill -9 of a node, its
SIGTERM, a rolling restart, kill -9 of one worker of `--workers 2`, Redis and PostgreSQL
restarted) with concurrent SQL writers and clients that reconnect and resume (nothing
missing, nothing twice, in order, every client at the head at the end)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
import trio

from sinal.node.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from sinal.node.localcluster import LocalCluster, NodeProcess, render_nginx_conf
from sinal.node.migrate import apply_migrations
from tests.cluster.process_support import (
    GUARD,
    ResumingClient,
    Writers,
    check_every_client,
    clean_env,
    clients_under_writes,
    log_head,
    poll_until,
)
from tests.realtime.realtime_support import token_for, users_of
from tests.servers import scratch_folder, throwaway_redis

pytestmark = pytest.mark.slow


def test_rendered_conf_keeps_the_repository_file_but_the_addresses(tmp_path: object) -> None:
    from pathlib import Path

    from sinal.node.localcluster import NGINX_CONF

    text = NGINX_CONF.read_text()
    rendered = render_nginx_conf(text, http_ports=[5001, 5002], ws_ports=[6001, 6002],
                                 listen_port=7000, run_dir=Path("/run/x"))
    assert "server 127.0.0.1:5001 max_fails=3 fail_timeout=10s;" in rendered
    assert "server 127.0.0.1:6002 max_fails=3 fail_timeout=10s;" in rendered
    assert "listen 127.0.0.1:7000;" in rendered and "server app:" not in rendered
    assert rendered.startswith("pid /run/x/nginx.pid;")
    assert "least_conn;" in rendered and "proxy_read_timeout 86400s;" in rendered


def ready_node(url: str) -> str | None:
    try:
        response = httpx.get(url + "/health/ready", timeout=5)
    except httpx.HTTPError:
        return None
    node: str | None = response.json().get("node") if response.status_code == 200 else None
    return node


async def wait_ready(cluster: LocalCluster, nodes: set[str]) -> None:
    """Until every node of `nodes` answered ready through nginx."""
    seen: set[str] = set()

    async def ask() -> bool:
        node = await trio.to_thread.run_sync(ready_node, cluster.http_url)
        if node:
            seen.add(node)
        return nodes <= seen

    with trio.fail_after(GUARD):
        while True:
            if await ask():
                return
            await trio.sleep(0.05)


def worker_pids(member: NodeProcess) -> list[int]:
    import psutil

    assert member.process is not None
    return sorted(child.pid for child in psutil.Process(member.process.pid).children())


async def every_worker_ready(member: NodeProcess, workers: int) -> None:
    """Until each of the node's workers answered /health/ready on its own port (a new
    connection each time: SO_REUSEPORT hands it to any worker)."""
    want = {f"{member.node_id}-w{i}" for i in range(workers)}
    seen: set[str] = set()
    url = f"http://127.0.0.1:{member.http_port}"

    def ask() -> None:
        try:
            response = httpx.get(url + "/health/ready", timeout=5,
                                 headers={"Connection": "close"})
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            seen.add(response.json()["node"])

    with trio.fail_after(GUARD):
        while not want <= seen:
            await trio.to_thread.run_sync(ask)
            await trio.sleep(0 if want <= seen else 0.02)


@asynccontextmanager
async def nginx_cluster(db_url: str, redis_url: str, redis_prefix: str, workers: int = 1,
                        **settings: str) -> AsyncIterator[LocalCluster]:
    env = clean_env(DATABASE_URL=db_url, REDIS_URL=redis_url,
                    SINAL_REDIS_PREFIX=redis_prefix, **settings)
    cluster = LocalCluster(env, nodes=2,
                           serve_args=("--workers", str(workers)) if workers > 1 else ())
    try:
        await cluster.start()
        if workers > 1:
            for member in cluster.members:
                await every_worker_ready(member, workers)
        else:
            await wait_ready(cluster, {"local-n0", "local-n1"})
        yield cluster
    finally:
        await cluster.stop()


async def test_rest_websocket_and_forwarded_for_through_nginx(
        db_url: str, redis_url: str, redis_prefix: str) -> None:
    users = users_of(db_url)
    async with nginx_cluster(db_url, redis_url, redis_prefix,
                             RATE_LIMIT_REQUESTS_PER_MINUTE="3") as cluster:
        # budgets key on the address nginx saw (127.0.0.2): a forged header changes nothing
        def get_from(source: str, forged: str) -> int:
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(transport=transport, timeout=10) as http:
                return http.get(cluster.http_url + "/api/purchase-requests",
                                headers={"X-Forwarded-For": forged}).status_code

        codes = [await trio.to_thread.run_sync(get_from, "127.0.0.2", f"192.0.2.{i}")
                 for i in range(4)]
        assert codes == [401, 401, 401, 429]
        assert await trio.to_thread.run_sync(get_from, "127.0.0.3", "192.0.2.1") == 401
        keys = {k.decode() for k in redis.Redis.from_url(redis_url).keys(
            redis_prefix + "rest:rate:ip:*")}
        assert keys == {redis_prefix + "rest:rate:ip:127.0.0.2",
                        redis_prefix + "rest:rate:ip:127.0.0.3"}

        # the WebSocket upgrade and live updates through nginx
        start = await trio.to_thread.run_sync(log_head, db_url)
        # two users (the budget above is 3 frames a minute per user, cluster-wide): each
        # subscribes twice, once per node
        tokens = [token_for(users[email]) for email in ("admin@sinal.dev", "fabio@sinal.dev")]
        clients = [ResumingClient(cluster.ws_url, tokens[i % 2], start) for i in range(4)]
        writers = Writers(db_url, threads=2, rows=30)
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(c.run, done)
            await poll_until(lambda: all(c.sessions for c in clients))
            await trio.to_thread.run_sync(writers.run_all)
            await check_every_client(clients, db_url, start, done)


def health_of(cluster: LocalCluster) -> str:
    """Charge a REST request (so the budgets meet Redis), then read the cluster state."""
    httpx.get(cluster.http_url + "/api/purchase-requests", timeout=10)
    state: str = httpx.get(cluster.http_url + "/health/realtime", timeout=10).json()["cluster"]
    return state


def busiest_member(cluster: LocalCluster) -> NodeProcess:
    """The node holding the most of the clients' sockets (asked directly, not through
    nginx): stopping it is sure to make clients reconnect, however nginx spread them."""
    def sockets(member: NodeProcess) -> int:
        url = f"http://127.0.0.1:{member.http_port}/health/realtime"
        count: int = httpx.get(url, timeout=10).json()["websocketConnections"]
        return count

    busiest = max(cluster.members, key=sockets)
    assert sockets(busiest) > 0
    return busiest


async def run_fault(db_url: str, redis_url: str, redis_prefix: str, fault: str,
                    redis_server: EmbeddedRedis | None = None,
                    postgres: EmbeddedPostgres | None = None) -> None:
    users = users_of(db_url)
    workers = 2 if fault == "worker" else 1
    async with nginx_cluster(db_url, redis_url, redis_prefix, workers=workers,
                             SINAL_DRAIN_TIMEOUT="200") as cluster:
        token = token_for(users["admin@sinal.dev"])
        async with clients_under_writes(db_url, cluster.ws_url, token, rows=60,
                                        first=30) as (clients, writers):
            if fault == "kill":
                victim = await trio.to_thread.run_sync(busiest_member, cluster)
                code = await cluster.stop_node(victim, signal.SIGKILL)
                assert code == -signal.SIGKILL
            elif fault == "term":
                victim = await trio.to_thread.run_sync(busiest_member, cluster)
                assert await cluster.stop_node(victim) == 0
                await poll_until(lambda: sum(c.shutdowns for c in clients) >= 1)
            elif fault == "rolling":
                for member in cluster.members:
                    assert await cluster.stop_node(member) == 0
                    await cluster.start_node(member)
                    await cluster.wait_node_ready(member)
            elif fault == "redis":
                assert redis_server is not None
                await trio.to_thread.run_sync(redis_server.stop)
                await poll_until(lambda: health_of(cluster) == "degraded", every=0.1)
                await writers.wait_written(90)  # serving meanwhile
                await trio.to_thread.run_sync(redis_server.start)
                await poll_until(lambda: health_of(cluster) == "ok", every=0.2)
                # both nodes' buses are back on their own: a broadcast sent through nginx
                # reaches both processes and every socket
                sent: list[dict[str, Any]] = []

                def broadcast_reaches_both() -> bool:
                    answer = httpx.post(cluster.http_url + "/api/admin/broadcasts",
                                        json={"message": "Redis is back"}, timeout=10,
                                        headers={"Authorization": f"Bearer {token}"})
                    assert answer.status_code == 202, answer.text
                    sent.append(answer.json())
                    return bool(answer.json()["processes"] == len(cluster.members))

                await poll_until(broadcast_reaches_both, every=0.2)
                await poll_until(lambda: all(sent[-1]["id"] in c.broadcasts for c in clients))
            elif fault == "worker":  # one worker of node 0's two, killed with -9
                member = cluster.members[0]
                before = worker_pids(member)
                assert len(before) == 2
                os.kill(before[0], signal.SIGKILL)
                # its parent starts a new one in its place, which serves again
                await poll_until(lambda: len(after := worker_pids(member)) == 2
                                 and before[0] not in after, every=0.05)
                await every_worker_ready(member, 2)
            elif fault == "postgres":
                assert postgres is not None
                await trio.to_thread.run_sync(postgres.restart)
            if fault in ("kill", "term", "rolling"):
                # the victims' clients reconnect before the writers' last rows are checked
                # (the writers may have finished before the fault took effect)
                await poll_until(lambda: sum(c.sessions for c in clients) > len(clients))
        if fault == "worker":  # whoever was on the victim reconnected; nobody else did
            assert sum(c.sessions for c in clients) >= len(clients)
        elif fault in ("redis", "postgres"):  # no node stopped: every socket stayed open
            assert [c.sessions for c in clients] == [1] * len(clients)
        else:
            assert sum(c.sessions for c in clients) > len(clients)  # some had to reconnect
        if fault in ("term", "rolling"):
            assert sum(c.shutdowns for c in clients) >= 1  # told, not dropped


async def test_kill_9_one_node(db_url: str, redis_url: str, redis_prefix: str) -> None:
    await run_fault(db_url, redis_url, redis_prefix, "kill")


async def test_sigterm_one_node_drains(db_url: str, redis_url: str, redis_prefix: str) -> None:
    await run_fault(db_url, redis_url, redis_prefix, "term")


async def test_rolling_restart_of_every_node(
        db_url: str, redis_url: str, redis_prefix: str) -> None:
    await run_fault(db_url, redis_url, redis_prefix, "rolling")


async def test_one_worker_of_two_killed_behind_nginx(
        db_url: str, redis_url: str, redis_prefix: str) -> None:
    await run_fault(db_url, redis_url, redis_prefix, "worker")


async def test_redis_killed_and_restarted(db_url: str) -> None:
    with throwaway_redis() as server:
        await run_fault(db_url, server.url, "fault:", "redis", redis_server=server)


async def test_postgres_restarted() -> None:
    with scratch_folder("sinal-fault-pg-") as folder:
        server = EmbeddedPostgres(folder / "data", free_port())
        server.start()
        try:
            apply_migrations(server.url)
            with throwaway_redis() as cache:
                await run_fault(server.url, cache.url, "fault:", "postgres", postgres=server)
        finally:
            server.stop()
