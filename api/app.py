"""The HTTP front end (Quart-Trio): health endpoints now; REST deltas, writes, metrics and
the supervisor status are added by the REST issue.

`create_app(node)` takes the running node (engine.node.Node): everything the endpoints
report comes from its in-memory state, so health checks never wait on the database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import jsonify
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from engine.node import Node


def create_app(node: Node) -> QuartTrio:
    app = QuartTrio("sinal")
    app.config["JSON_SORT_KEYS"] = False

    @app.get("/health/live")
    async def live() -> Any:
        return jsonify({"status": "ok", "node": node.node_id})

    @app.get("/health/ready")
    async def ready() -> Any:
        ok = node.ready.is_set()
        body = {"status": "ready" if ok else "starting", "node": node.node_id}
        return jsonify(body), (200 if ok else 503)

    @app.get("/health/realtime")
    async def realtime() -> Any:
        metrics = node.health_metrics()
        return jsonify(metrics), (200 if metrics["healthy"] else 503)

    @app.get("/api/supervisor")
    async def supervisor() -> Any:
        from quart import request

        from engine.tokens import TokenError, verify_token

        header = request.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        try:
            claims = verify_token(node.config.jwt_secret, token)
        except TokenError as exc:
            return jsonify({"type": "about:blank", "title": "Unauthorized", "status": 401,
                            "code": exc.code, "detail": str(exc)}), 401
        if claims.role != "admin":
            return jsonify({"type": "about:blank", "title": "Forbidden", "status": 403,
                            "code": "forbidden", "detail": "admins only"}), 403
        return jsonify(node.status_tree())

    @app.get("/")
    async def index() -> Any:
        return jsonify({
            "name": "sinal",
            "node": node.node_id,
            "uptime": round(time.monotonic() - node.started_at, 3),
            "websocket": node.websocket_url,
            "endpoints": ["/health/live", "/health/ready", "/health/realtime"],
        })

    return app
