"""Operators' endpoints: health (seed 8.2 thresholds), Prometheus, realtime metrics, the
supervisor tree."""

from __future__ import annotations

from tests.api.api_support import ADMIN, REQUESTER, Api
from tests.api.test_api_reads import is_problem

PR = "/api/purchase-requests"


async def test_liveness_and_readiness(api: Api) -> None:
    live = await api.get("/health/live", None)
    assert live.status_code == 200 and live.json()["node"] == api.node.node_id
    ready = await api.get("/health/ready", None)
    assert ready.status_code == 200 and ready.json()["listening"] is True
    assert api.node.listener is not None
    conn, api.node.listener.listen_conn = api.node.listener.listen_conn, None
    try:
        lost = await api.get("/health/ready", None)
        assert lost.status_code == 503 and lost.json()["status"] == "database_unavailable"
    finally:
        api.node.listener.listen_conn = conn


async def test_readiness_says_draining_once_a_graceful_stop_begins(api: Api) -> None:
    api.node.draining = True  # what Node.drain() sets first on SIGTERM
    try:
        ready = await api.get("/health/ready", None)
        assert ready.status_code == 503
        assert ready.json() == {"status": "draining", "node": api.node.node_id,
                                "listening": True}
    finally:
        api.node.draining = False
    assert (await api.get("/health/ready", None)).json()["status"] == "ready"


async def test_health_realtime_follows_the_seed_thresholds(api: Api) -> None:
    healthy = await api.get("/health/realtime", None)
    body = healthy.json()
    assert healthy.status_code == 200 and body["healthy"] is True
    for key in ("websocketConnections", "cacheHitRate", "averageLatency", "uptime",
                "memoryUsage", "timestamp"):
        assert key in body
    stats = api.node.http_stats
    # 25 list reads without a single 304: a judged hit rate of 0 is unhealthy
    for _ in range(25):
        stats.record(0.001, read=True)
    cold = await api.get("/health/realtime", None)
    assert cold.status_code == 503 and cold.json()["cacheHitRate"] < 0.7
    for _ in range(200):
        stats.record(0.001, read=True, hit=True)
    assert (await api.get("/health/realtime", None)).status_code == 200
    stats.record(600.0)  # one very slow request pulls the mean over 500 ms
    slow = await api.get("/health/realtime", None)
    assert slow.status_code == 503 and slow.json()["averageLatency"] > 500


async def test_realtime_metrics_count_requests_hits_and_latency(api: Api) -> None:
    first = await api.get(PR)
    assert (await api.get(PR, headers={"If-None-Match": first.headers["ETag"]})).status_code \
        == 304
    metrics = await api.ok("get", "/api/metrics/realtime", REQUESTER)
    assert metrics["activeConnections"] == 0
    assert metrics["requestsPerMinute"] >= 2
    assert metrics["cacheHitRate"] == 0.5
    assert 0 < metrics["averageLatency"] < 5000
    assert is_problem(await api.get("/api/metrics/realtime", None), 401, "auth_required")


async def test_prometheus_exposition(api: Api) -> None:
    await api.get(PR)
    await api.get("/api/nothing")
    response = await api.get("/metrics", None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert ('sinal_http_requests_total{method="GET",route="/api/purchase-requests",'
            'status="200"} 1.0') in text
    assert 'sinal_http_requests_total{method="GET",route="(unmatched)",status="404"}' in text
    assert 'sinal_http_request_duration_seconds_bucket{le="0.005",' \
           'route="/api/purchase-requests"}' in text
    for name in ("sinal_websocket_connections 0.0", "sinal_topic_frames_out_total{",
                 "sinal_topic_subscribers{", "sinal_listener_lag ", "sinal_actor_restarts",
                 "sinal_node_ready 1.0", "sinal_http_cache_hits_total", "sinal_actors_live",
                 "sinal_gc_full_collections_total 0.0", "sinal_gc_last_full_pause_seconds "):
        assert name in text, name


async def test_supervisor_tree_is_for_admins(api: Api) -> None:
    tree = await api.ok("get", "/api/supervisor", ADMIN)
    assert tree["node"] == api.node.node_id
    assert tree["tree"]["name"] == "sinal"
    names = str(tree["tree"])
    assert "database_services" in names and "http" in names
    assert is_problem(await api.get("/api/supervisor", REQUESTER), 403, "forbidden")
    assert is_problem(await api.get("/api/supervisor", None), 401, "auth_required")
    index = await api.ok("get", "/", ADMIN)
    assert "/api/purchase-requests" in index["endpoints"]
