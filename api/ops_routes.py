"""Operators' endpoints: health, metrics, the supervisor tree, the API document.

Health checks and metrics read memory only (no query): a sick database must not make the
health endpoint hang, and a scrape must cost nothing.

| endpoint | auth | answer |
|---|---|---|
| GET /health/live | - | 200 while the process serves HTTP |
| GET /health/ready | - | 200 once serving with the listener connected to the database |
| GET /health/realtime | - | seed 8.2's metrics; 200 healthy, 503 not |
| GET /metrics | - | Prometheus text exposition |
| GET /api/metrics/realtime | bearer | connections, requests/min, cache hit rate, latency |
| GET /api/supervisor | admin | the supervisor tree, the hub, the listener |
| GET /openapi.json | - | OpenAPI 3.1 document of every endpoint |
"""

from __future__ import annotations

import time

from quart import Response

from sinal.api.context import ApiContext
from sinal.api.openapi import openapi_document
from sinal.api.stats import health_report

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def register_ops(api: ApiContext) -> None:
    app, realtime, node_id = api.app, api.realtime, api.settings.node_id

    @app.get("/health/live")
    async def live() -> Response:
        return api.json({"status": "ok", "node": node_id})

    @app.get("/health/ready")
    async def ready() -> Response:
        serving, listening = realtime.ready(), realtime.listening()
        ok = serving and listening
        status = ("ready" if ok else "draining" if realtime.draining()
                  else "starting" if not serving else "database_unavailable")
        body = {"status": status, "node": node_id, "listening": listening}
        return api.json(body, 200 if ok else 503)

    @app.get("/health/realtime")
    async def health() -> Response:
        metrics = health_report(realtime, api.stats, api.settings.max_connections)
        return api.json(metrics, 200 if metrics["healthy"] else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        response: Response = app.response_class(api.metrics.exposition(), status=200,
                                                content_type=PROMETHEUS_CONTENT_TYPE)
        return response

    @app.get("/api/metrics/realtime")
    async def realtime_metrics() -> Response:
        await api.caller()
        return api.json({
            "activeConnections": realtime.cluster_connections(),
            "nodeConnections": realtime.active_connections(),
            **api.stats.snapshot(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    @app.get("/api/supervisor")
    async def supervisor() -> Response:
        if api.operator():
            api.audit_event("supervisor_read", "/api/supervisor", {"scope": "operator"})
        else:
            admin = await api.admin()
            api.audit_event("supervisor_read", "/api/supervisor", {}, admin)
        return api.json(realtime.status_tree())

    document = openapi_document()

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return api.json(document)

    @app.get("/")
    async def index() -> Response:
        return api.json({
            "name": "sinal",
            "node": node_id,
            "uptime": round(realtime.uptime(), 3),
            "websocket": realtime.websocket_url(),
            "openapi": "/openapi.json",
            "endpoints": sorted(document["paths"]),
        })
