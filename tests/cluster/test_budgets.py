"""Rate budgets for the whole cluster, in Redis: shared by every process, charged
atomically, local while Redis is down and shared again when it is back; budgets key on
the real client behind a trusted proxy (TRUSTED_PROXIES, X-Forwarded-For). Real Redis."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
import redis
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from sinal.domain.ratelimit import SharedRateLimiter, client_address, trusted_networks
from sinal.node.wiring import Node
from tests.realtime.realtime_support import node_config
from tests.servers import throwaway_redis


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(url: str, prefix: str, per_minute: int = 5, clock: Clock | None = None
            ) -> SharedRateLimiter:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return SharedRateLimiter(per_minute, client, prefix=prefix, clock=clock or Clock())


def test_two_processes_draw_on_one_budget(redis_url: str, redis_prefix: str) -> None:
    a, b = limiter(redis_url, redis_prefix), limiter(redis_url, redis_prefix)
    assert [a.allow("user:u1") for _ in range(3)] == [True, True, True]
    assert [b.allow("user:u1") for _ in range(2)] == [True, True]
    assert not a.allow("user:u1") and not b.allow("user:u1")
    assert b.retry_after("user:u1") > 0
    assert a.allow("user:u2")  # another key, another budget
    assert not a.degraded and not b.degraded


def test_redis_down_means_local_budgets_then_back_to_shared() -> None:
    clock = Clock()
    with throwaway_redis() as server:
        shared = limiter(server.url, "t:", per_minute=4, clock=clock)
        other = limiter(server.url, "t:", per_minute=4, clock=clock)
        assert [shared.allow("k") for _ in range(4)] == [True] * 4
        assert not other.allow("k")  # the cluster's budget is spent
        server.stop()
        # down: each process falls back to its own (full) local budget, and says so
        assert other.allow("k") and other.degraded
        assert [other.allow("k") for _ in range(3)] == [True] * 3
        assert not other.allow("k")
        server.start()
        assert not other.allow("k") and other.degraded  # asks again only after retry_every
        clock.now += other.retry_every
        assert other.allow("k")  # back: a restarted Redis has a fresh bucket
        assert not other.degraded and other.failures == 1


def test_client_address_believes_only_trusted_proxies() -> None:
    proxies = trusted_networks("127.0.0.1, 10.0.0.0/8")
    assert proxies == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert client_address("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"  # not a proxy
    assert client_address("127.0.0.1", "1.2.3.4", proxies) == "1.2.3.4"
    assert client_address("127.0.0.1", None, proxies) == "127.0.0.1"
    # a forged first entry stays left of what the trusted proxies appended
    assert client_address("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.1.1.1", proxies) == "1.2.3.4"
    assert client_address("127.0.0.1", "junk, 10.1.1.1", proxies) == "10.1.1.1"
    assert client_address("127.0.0.1", "10.2.2.2", proxies) == "10.2.2.2"  # all trusted
    assert client_address("127.0.0.1", "1.2.3.4", ()) == "127.0.0.1"


@pytest.mark.slow
async def test_two_nodes_share_rest_budgets_keyed_on_the_forwarded_client(
        db_url: str, redis_url: str, redis_prefix: str,
        nursery: trio.Nursery) -> None:
    settings = {"REDIS_URL": redis_url, "SINAL_REDIS_PREFIX": redis_prefix,
                "RATE_LIMIT_REQUESTS_PER_MINUTE": "4", "TRUSTED_PROXIES": "127.0.0.1"}
    one: Node = await nursery.start(
        Node(node_config(db_url, SINAL_NODE_ID="one", **settings), db_url).run)
    two: Node = await nursery.start(
        Node(node_config(db_url, SINAL_NODE_ID="two", **settings), db_url).run)

    def get(node: Node, path: str, client: str) -> httpx.Response:
        return httpx.get(node.http_url + path, headers={"X-Forwarded-For": client},
                         timeout=10)

    async def status(node: Node, client: str) -> int:
        response = await trio.to_thread.run_sync(get, node, "/api/purchase-requests", client)
        return response.status_code

    assert [await status(one, "198.51.100.7") for _ in range(2)] == [401, 401]
    assert [await status(two, "198.51.100.7") for _ in range(2)] == [401, 401]
    assert await status(one, "198.51.100.7") == 429  # the budget is the cluster's
    assert await status(two, "198.51.100.7") == 429
    assert await status(two, "198.51.100.8") == 401  # another client, its own budget
    keys = redis.Redis.from_url(redis_url).keys(redis_prefix + "rest:rate:ip:198.51.100.7")
    assert keys, "the budget lives in Redis"
    health = (await trio.to_thread.run_sync(get, one, "/health/realtime", "x")).json()
    assert health["cluster"] == "ok"


async def test_prelogin_cap_per_address_keys_on_the_forwarded_client(
        db_url: str, nursery: trio.Nursery) -> None:
    config = node_config(db_url, TRUSTED_PROXIES="127.0.0.1", WEBSOCKET_PRELOGIN_PER_ADDRESS="1")
    node: Node = await nursery.start(Node(config, db_url).run)

    async def upgrade(client: str, task_status: trio.TaskStatus[int]) -> None:
        try:
            async with open_websocket_url(node.websocket_url,
                                          extra_headers=[(b"X-Forwarded-For",
                                                          client.encode())]):
                task_status.started(101)
                await trio.sleep_forever()
        except ConnectionRejected as rejected:
            task_status.started(rejected.status_code)

    with trio.fail_after(20):
        async with trio.open_nursery() as sockets:
            assert await sockets.start(upgrade, "192.0.2.1") == 101
            assert await sockets.start(upgrade, "192.0.2.1") == 429  # the same client
            assert await sockets.start(upgrade, "192.0.2.2") == 101  # another one
            sockets.cancel_scope.cancel()
