"""POST /api/admin/broadcasts: an administrator's message to every connected user, on every
node and worker of the cluster (admins only: 403 otherwise).

    POST /api/admin/broadcasts
    {"message": "Maintenance at 18:00 UTC", "level": "warning", "roles": ["buyer"]}

`level` is info (the default), warning or critical; `roles`, when given, limits it to users
of those roles. Every socket that is connected when it is sent gets one `broadcast` frame
(docs/protocol.md); nothing is kept for users who are not. With Redis the message goes
over the cluster bus (pub/sub) to every process: 202 with `scope: "cluster"` and
`processes`, how many received it (each delivers it to its own sockets as it arrives, so
`sockets` is 0). Without Redis, or while Redis does not answer, only the process that
took the request delivers it: `scope: "node"` and `sockets`, how many of its sockets
took it (behind several workers or nodes that is a part of the users). The audit trail
records who sent what.
"""

from __future__ import annotations

from quart import Response, request

from sinal.api.context import ApiContext
from sinal.api.validation import Field, parse_json, validate
from sinal.domain.principals import ROLES
from sinal.protocol import BROADCAST_LEVELS, BROADCAST_MAX_CHARS

BROADCAST_BODY = (
    Field("message", "string", required=True, max_length=BROADCAST_MAX_CHARS, minimum=1,
          description="the text every connected user sees"),
    Field("level", "choices", choices=BROADCAST_LEVELS, description="default info"),
    Field("roles", "choice_list", max_length=len(ROLES), choices=ROLES,
          description="only users of these roles; absent: everyone"),
)


def register_broadcasts(api: ApiContext) -> None:
    @api.app.post("/api/admin/broadcasts")
    async def send_broadcast() -> Response:
        admin = await api.admin()
        body = validate(parse_json(await request.get_data(as_text=False), optional=False,
                                   content_type=request.headers.get("Content-Type")),
                        BROADCAST_BODY)
        roles = body.get("roles")
        if roles == []:
            roles = None  # an empty list says no limit, as everywhere else
        sent = await api.realtime.broadcast(
            body["message"], body.get("level") or "info",
            frozenset(roles) if roles is not None else None)
        api.audit_event("broadcast", request.path,
                        {"id": sent["id"], "level": sent["level"], "roles": roles,
                         "scope": sent["scope"], "chars": len(body["message"])}, admin)
        return api.json(sent, 202)
