"""The status snapshot (JSON), its text rendering, and the Prometheus metrics."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY, generate_latest
from trio.testing import MockClock

import sinal.engine.metrics
from sinal.engine.actor import Actor
from sinal.engine.dynamic import DynamicSupervisor
from sinal.engine.registry import Registry
from sinal.engine.status import ActorState, error_info, render_status
from sinal.engine.supervisor import ChildSpec, Strategy, Supervisor, SupervisorFlags
from tests.engine.engine_testing import Workers, node

ACTOR_KEYS = {
    "type",
    "name",
    "kind",
    "state",
    "restart",
    "restarts",
    "last_error",
    "uptime",
    "inbox",
    "overruns",
}


class Topic(Actor[str]):
    kind = "topic"

    async def handle(self, message: str) -> None:
        if message == "boom":
            raise ValueError("bad row")


class Connection(Topic):
    kind = "connection"


async def build_tree(
    nursery: trio.Nursery, workers: Workers, registry: Registry
) -> tuple[Supervisor, Topic, DynamicSupervisor]:
    topic = Topic("topic:requests", registry=registry)

    async def connection(name: str, *, task_status: Any) -> None:
        await Connection(name, registry=registry, unique_name=False).run(task_status=task_status)

    pool = DynamicSupervisor("connections", connection, child_kind="connection", max_children=100)
    topics = Supervisor(
        "topics", [ChildSpec.of(topic)], SupervisorFlags(strategy=Strategy.ONE_FOR_ALL)
    )
    root = Supervisor(
        "root",
        [
            workers.spec("db-listener", kind="database_listener"),
            ChildSpec.of(topics),
            ChildSpec.of(pool),
        ],
        SupervisorFlags(intensity=5, period=30.0, backoff_base=0.0),
    )
    await nursery.start(root.run)
    return root, topic, pool


async def test_status_is_a_json_tree_with_the_documented_fields(
    autojump_clock: MockClock, workers: Workers
) -> None:
    registry = Registry()
    async with trio.open_nursery() as nursery:
        root, topic, pool = await build_tree(nursery, workers, registry)
        await pool.start_child("conn-1")
        await trio.sleep(3.0)
        await topic.ref.send("boom")
        await trio.sleep(2.0)
        status = json.loads(json.dumps(root.status()))
        root.request_stop()

    assert status["type"] == "supervisor"
    assert status["strategy"] == "one_for_one"
    assert status["intensity"] == {"max_restarts": 5, "period": 30.0, "recent_restarts": 0}
    assert status["uptime"] == pytest.approx(5.0)
    assert [c["name"] for c in status["children"]] == ["db-listener", "topics", "connections"]
    for child in status["children"]:
        assert ACTOR_KEYS <= set(child)

    listener = node(status, "db-listener")
    assert listener["type"] == "actor"
    assert listener["kind"] == "database_listener"
    assert listener["state"] == "running"
    assert listener["inbox"] is None  # a plain function reports no inbox

    topics = node(status, "topics")
    assert topics["type"] == "supervisor"
    assert topics["strategy"] == "one_for_all"
    assert topics["intensity"]["recent_restarts"] == 1
    topic_node = node(status, "topics", "topic:requests")
    assert topic_node["kind"] == "topic"
    assert topic_node["restarts"] == 1
    assert topic_node["inbox"] == {"depth": 0, "capacity": 64, "refused": 0}
    assert topic_node["last_error"]["type"] == "ValueError"
    assert topic_node["last_error"]["message"] == "bad row"
    assert topic_node["last_error"]["time"].endswith("Z")
    assert 1.9 <= topic_node["uptime"] <= 2.0  # restarted after a backoff of at most 0.1 s

    pool_node = node(status, "connections")
    assert pool_node["type"] == "pool"
    assert pool_node["counts"]["live"] == 1
    assert pool_node["top_by_inbox_depth"][0]["name"] == "conn-1"
    assert pool_node["top_by_inbox_depth"][0]["inbox"]["capacity"] == 64


async def test_render_status_prints_an_indented_tree(
    autojump_clock: MockClock, workers: Workers
) -> None:
    registry = Registry()
    async with trio.open_nursery() as nursery:
        root, topic, pool = await build_tree(nursery, workers, registry)
        await pool.start_child("conn-1")
        await topic.ref.send("boom")
        await trio.sleep(1.0)
        text = render_status(root.status())
        root.request_stop()
    lines = text.splitlines()
    assert lines[0].startswith("root [supervisor one_for_one, intensity 5 in 30s")
    assert lines[1].startswith("├── db-listener [database_listener] running")
    assert any(line.startswith("├── topics [supervisor one_for_all") for line in lines)
    assert any(line.startswith("│   └── topic:requests [topic] running") for line in lines)
    assert any("restarts 1, inbox 0/64" in line for line in lines)
    assert any("last error: ValueError: bad row at " in line for line in lines)
    assert any(
        line.startswith("└── connections [pool of connection, 1/100 live]") for line in lines
    )
    assert any("top by inbox depth:" in line for line in lines)
    assert lines[-1].lstrip(" │").startswith("└── conn-1 [connection] running")


def test_status_before_start_and_error_info_outside_trio(workers: Workers) -> None:
    sup = Supervisor("s", [workers.spec("a")])
    status = sup.status()
    assert status["state"] == "stopped"
    assert status["uptime"] is None
    assert node(status, "a")["state"] == "stopped"
    json.dumps(status)
    info = error_info(KeyError("k"))
    assert info["type"] == "KeyError" and info["message"] == "'k'"
    assert [s.value for s in ActorState] == [
        "starting",
        "running",
        "restarting",
        "stopped",
        "failed",
    ]


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metrics_count_restarts_live_actors_and_inbox_depth(
    autojump_clock: MockClock, workers: Workers
) -> None:
    registry = Registry()
    restarts_before = sample("sinal_actor_restarts_total", kind="topic")
    async with trio.open_nursery() as nursery:
        root, topic, pool = await build_tree(nursery, workers, registry)
        for i in range(3):
            await pool.start_child(f"conn-{i}")
        assert sample("sinal_actors_live", kind="connection") >= 3
        assert sample("sinal_actors_live", kind="topic") >= 1
        await topic.ref.send("boom")
        await trio.sleep(0.2)  # the topics supervisor backs off up to 0.1 s
        assert sample("sinal_actor_restarts_total", kind="topic") == restarts_before + 1
        exposition = generate_latest(REGISTRY).decode()
        assert 'sinal_inbox_depth{kind="topic"}' in exposition
        assert 'sinal_inbox_depth_max{kind="connection"}' in exposition
        root.request_stop()
    # no live actors of this registry any more
    assert registry.live_refs_by_kind() == {}


async def test_inbox_depth_gauge_is_computed_at_scrape_time(autojump_clock: MockClock) -> None:
    registry = Registry()

    class Sleepy(Actor[int]):
        kind = "sleepy-metrics-test"

        async def main(self) -> None:
            await trio.sleep_forever()

    actor = Sleepy("sleepy", registry=registry, capacity=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        for i in range(4):
            actor.ref.try_send(i)
        assert sample("sinal_inbox_depth", kind="sleepy-metrics-test") == 4
        assert sample("sinal_inbox_depth_max", kind="sleepy-metrics-test") == 4
        for i in range(10):
            actor.ref.try_send(i)
        assert sample("sinal_inbox_refused_total", kind="sleepy-metrics-test") == 4
        nursery.cancel_scope.cancel()
    assert sample("sinal_actors_live", kind="sleepy-metrics-test") == 0


def test_metrics_module_can_be_imported_again() -> None:
    before = sinal.engine.metrics.ACTOR_RESTARTS
    collector = sinal.engine.metrics.LIVE_ACTORS_COLLECTOR
    reloaded = importlib.reload(sinal.engine.metrics)
    assert reloaded.ACTOR_RESTARTS is before
    assert reloaded.LIVE_ACTORS_COLLECTOR is collector
    generate_latest(REGISTRY)  # still one collector per name
