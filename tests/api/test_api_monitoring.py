"""Notification preferences (seed 4.2) and the metrics service (seed 8.2 AlertManager)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

from sinal.actors.metrics_service import AlertThresholds, MetricsService, check_metrics
from sinal.domain.db import Database
from sinal.node.config import load_config
from sinal.node.settings import alert_thresholds
from sinal.protocol import Notification
from tests.api.api_support import ADMIN, APPROVER, REQUESTER, Api
from tests.api.test_api_reads import is_problem
from tests.realtime.realtime_support import Client, client, token_for

PREFS = "/api/user/notification-preferences"
JSON = {"Content-Type": "application/json"}
PR = "/api/purchase-requests"


@pytest.fixture
def node_settings() -> dict[str, str]:
    # the service runs, but its interval is long: the tests call collect_once themselves
    return {"ENABLE_PERFORMANCE_MONITORING": "true", "METRICS_COLLECTION_INTERVAL": "3600000"}


async def next_notification(c: Client) -> Notification:
    with trio.fail_after(20):
        while True:
            message = await c.recv(20)
            if isinstance(message, Notification):
                return message


async def test_preferences_are_validated_and_persisted(api: Api) -> None:
    defaults = await api.ok("get", PREFS, REQUESTER)
    assert defaults == {"events": [], "frequency": "immediate", "soundEnabled": True,
                        "emailNotifications": False, "updatedAt": None}
    wanted = {"events": ["purchase_request_approved", "quotation_received"],
              "frequency": "daily", "soundEnabled": False, "emailNotifications": True}
    stored = await api.ok("put", PREFS, REQUESTER, json=wanted)
    assert {k: stored[k] for k in wanted} == wanted and stored["updatedAt"]
    assert await api.ok("get", PREFS, REQUESTER) == stored
    assert (await api.ok("get", PREFS, ADMIN))["updatedAt"] is None, "per user"
    # PUT replaces: what is left out takes its default
    assert (await api.ok("put", PREFS, REQUESTER, json={"frequency": "hourly"}))["events"] == []
    for body, field in (({"frequency": "sometimes"}, "frequency"),
                        ({"events": ["nope"]}, "events"),
                        ({"events": "order_issued"}, "events"),
                        ({"events": ["order_issued", "order_issued"]}, "events"),
                        ({"soundEnabled": "yes"}, "soundEnabled"),
                        ({"sound": True}, "sound"),
                        ([], "(body)")):
        response = await api.put(PREFS, REQUESTER, json=body)
        assert is_problem(response, 422, "invalid_body") and response.json()["field"] == field
    assert is_problem(await api.put(PREFS, REQUESTER, content=b"{", headers=JSON),
                      400, "malformed_json")
    assert is_problem(await api.put(PREFS, REQUESTER, content=b"", headers=JSON),
                      400, "malformed_json")
    assert is_problem(await api.put(PREFS, None, json={}), 401, "auth_required")


async def test_preferences_apply_at_once_to_live_sockets(api: Api) -> None:
    carla = api.users[APPROVER[1]]
    # a second level-1 approver with default preferences proves when a change was handled
    rows = await api.sql(
        "INSERT INTO users (email, name, role, department_id) VALUES "
        "('yara@sinal.dev', 'Yara', 'approver_a1', %s) RETURNING id::text",
        (carla["department_id"],))
    yara = {"id": rows[0][0], "role": "approver_a1"}
    await api.ok("put", PREFS, APPROVER[1], json={"frequency": "off"})
    async with client(api.node) as c_carla, client(api.node) as c_yara:
        await c_carla.connect(token_for(carla))
        await c_yara.connect(token_for(yara))
        first = await api.ok("post", PR, REQUESTER, 201,
                             json={"title": "First", "amount": 1, "submit": True})
        note = await next_notification(c_yara)
        assert note.action is not None and note.action["id"] == first["id"]
        # carla's socket stays open; her new preferences govern the next notification
        await api.ok("put", PREFS, APPROVER[1], json={
            "frequency": "immediate", "soundEnabled": False, "events": ["approval_required"]})
        second = await api.ok("post", PR, REQUESTER, 201,
                              json={"title": "Second", "amount": 1, "submit": True})
        note = await next_notification(c_carla)
        assert note.action is not None and note.action["id"] == second["id"], \
            "no notification for the request made while notifications were off"
        assert note.kind == "approval_required" and note.sound is False


def test_alert_rules_follow_the_seed() -> None:
    limits = alert_thresholds(load_config(
        {"PERFORMANCE_ALERT_THRESHOLD_MS": "250", "MAX_CONCURRENT_CONNECTIONS": "2000"},
        env_file=None))
    assert limits == AlertThresholds(250.0, 0.6, 512.0, 1600.0)
    calm = {"averageLatency": 250.0, "cacheHitRate": 0.6, "memoryMb": 512.0,
            "activeConnections": 1600.0}
    assert check_metrics(calm, limits) == []
    stormy = {"averageLatency": 251.0, "cacheHitRate": 0.59, "memoryMb": 513.0,
              "activeConnections": 1601.0}
    alerts = check_metrics(stormy, limits)
    assert [a.type for a in alerts] == ["HIGH_LATENCY", "LOW_CACHE_HIT_RATE", "HIGH_MEMORY",
                                        "HIGH_CONNECTIONS"]
    assert alerts[0].message == "Latência alta: 251ms" and alerts[2].severity == "critical"


class RecordingDb:
    """Stands in for engine.db.Database: counts the work, runs nothing (virtual time)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run(self, work: Callable[[Any], Any]) -> Any:
        self.calls.append(work.__qualname__)
        return 1


async def test_service_samples_every_interval_and_alerts_on_edges(
        autojump_clock: trio.abc.Clock) -> None:
    sample = {"averageLatency": 10.0, "cacheHitRate": 1.0, "memoryMb": 100.0,
              "activeConnections": 0.0}
    db = RecordingDb()
    service = MetricsService(db, lambda: sample, interval=60.0,  # type: ignore[arg-type]
                             limits=AlertThresholds(), node_id="n1")
    raised: list[list[str]] = []
    original = service.raise_alerts

    async def spy(alerts: Any) -> int:
        raised.append([a.type for a in alerts])
        return await original(alerts)

    service.raise_alerts = spy  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await trio.sleep(60 * 3 + 1)
        assert service.samples == 3 and raised == []
        sample["averageLatency"] = 5000.0
        await trio.sleep(60 * 3)
        assert service.samples == 6 and raised == [["HIGH_LATENCY"]], "once while it lasts"
        sample["averageLatency"] = 10.0
        await trio.sleep(60)
        sample["averageLatency"] = 5000.0
        sample["memoryMb"] = 900.0
        await trio.sleep(60)
        assert raised == [["HIGH_LATENCY"], ["HIGH_LATENCY", "HIGH_MEMORY"]]
        assert service.samples == 8
        nursery.cancel_scope.cancel()
    assert len(db.calls) == 8 + 2  # a row batch per sample, a notification batch per alert


async def test_service_writes_metrics_rows_and_notifies_active_admins(
        db_url: str, users: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    db = Database(db_url, max_size=2)
    await trio.to_thread.run_sync(db.open)
    try:
        sample = {"averageLatency": 1500.0, "cacheHitRate": 0.95, "requestsPerMinute": 12.0,
                  "activeConnections": 3.0, "memoryMb": 100.0, "listenerLag": 0.0}
        service = MetricsService(db, lambda: sample, interval=60.0, limits=AlertThresholds(),
                                 node_id="node-a")
        with caplog.at_level(logging.WARNING, logger="sinal.metrics"):
            started = await service.collect_once()
        assert [a.type for a in started] == ["HIGH_LATENCY"]
        assert any("HIGH_LATENCY" in r.getMessage() for r in caplog.records)
        rows = await db.fetch_all("SELECT metric_type, metric_value::float AS v, metadata "
                                  "FROM performance_metrics ORDER BY metric_type")
        assert {r["metric_type"]: r["v"] for r in rows} == {
            "average_latency_ms": 1500.0, "cache_hit_rate": 0.95, "requests_per_minute": 12.0,
            "active_connections": 3.0, "memory_mb": 100.0, "listener_lag": 0.0}
        assert all(r["metadata"] == {"node": "node-a"} for r in rows)
        notes = await db.fetch_all("SELECT user_id::text AS u, kind, action, push "
                                   "FROM notifications")
        assert [(n["u"], n["kind"], n["action"]["alert"], n["push"])  # type: ignore[index]
                for n in notes] == [
            (users[ADMIN]["id"], "performance_alert", "HIGH_LATENCY", True)]
        assert await service.collect_once() == []  # still high: no second alert
        # an admin who turned notifications off gets none
        await db.fetch_all("INSERT INTO notification_preferences (user_id, frequency) "
                           "VALUES (%s, 'off') RETURNING user_id", (users[ADMIN]["id"],))
        sample["memoryMb"] = 1024.0
        assert [a.type for a in await service.collect_once()] == ["HIGH_MEMORY"]
        assert len(await db.fetch_all("SELECT id FROM notifications")) == 1
    finally:
        await trio.to_thread.run_sync(db.close)


async def test_alert_reaches_admin_socket_as_a_notification(api: Api) -> None:
    service = api.node.metrics_service
    assert service is not None and service.interval == 3600.0
    api.node.http_stats.record(3.0)  # 3 s: over PERFORMANCE_ALERT_THRESHOLD_MS (1000)
    async with client(api.node) as admin:
        await admin.connect(token_for(api.users[ADMIN]))
        started = await service.collect_once()
        assert [a.type for a in started] == ["HIGH_LATENCY"]
        note = await next_notification(admin)
    assert note.kind == "performance_alert" and "Latência alta" in note.message
    assert note.action is not None and note.action["alert"] == "HIGH_LATENCY"
    assert note.action["node"] == api.node.node_id
