"""GET /openapi.json: the OpenAPI 3.1 document, built from the same tables the endpoints use
(resources and their fields, body field tables, problem codes), so it stays true.
tests/api/test_api_openapi.py checks that every route of the app is documented and every
documented route exists, and fuzzes the API from this document.
"""

from __future__ import annotations

from typing import Any

from sinal.api.broadcast_routes import BROADCAST_BODY
from sinal.api.dashboard_routes import OPENAPI_PATHS as DASHBOARD_PATHS
from sinal.api.history_routes import OPENAPI_PATHS as HISTORY_PATHS
from sinal.api.preferences import PREFERENCES
from sinal.api.problems import CODES
from sinal.api.reads import DEFAULT_LIMIT, MAX_LIMIT
from sinal.api.resources import RESOURCES, Resource
from sinal.api.validation import body_schema
from sinal.api.write_routes import CREATE_REQUEST, ORDER_ACTIONS, REQUEST_ACTIONS

_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "amount": {"type": "number"},
    "level": {"type": "integer", "minimum": 1, "maximum": 3},
    "delivery_days": {"type": ["integer", "null"]},
    "items": {"type": "array", "items": {"type": "object"}},
    "needed_by": {"type": ["string", "null"], "format": "date"},
    "valid_until": {"type": ["string", "null"], "format": "date"},
    "expected_delivery_date": {"type": ["string", "null"], "format": "date"},
    "delivered_at": {"type": ["string", "null"], "format": "date-time"},
    "quotation_id": {"type": ["string", "null"], "format": "uuid"},
    "department_id": {"type": ["string", "null"], "format": "uuid"},  # users may have none
    "is_active": {"type": "boolean"},
    "email": {"type": ["string", "null"]},
    "tax_id": {"type": ["string", "null"]},
}


def _field_schema(name: str) -> dict[str, Any]:
    if name in _FIELD_TYPES:
        return _FIELD_TYPES[name]
    if name == "id" or name.endswith("_id"):
        return _UUID
    if name.endswith("_at"):
        return _TIME
    return {"type": "string"}


def _row_schema(resource: Resource) -> dict[str, Any]:
    return {"type": "object", "required": ["id"],
            "properties": {f: _field_schema(f) for f in resource.columns}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "malformed query or body", 401: "missing, forged or expired token",
            403: "the caller's role may not do this", 404: "no such row",
            409: "the workflow does not allow this step now (invalid_transition)",
            410: "since is older than the log keeps: refetch (code resync)",
            413: "body over 1 MiB",
            415: "a body that is not Content-Type: application/json (unsupported_media_type)",
            422: "a body value is wrong (invalid_body and others)",
            429: "over the rate limit; see Retry-After",
            503: "the database does not answer"}
    out = {str(s): _problem(text[s]) for s in statuses}
    if 401 in statuses:
        out["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if 429 in statuses:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


_LIST_PARAMETERS = [
    {"name": "since", "in": "query", "schema": {"type": "string"},
     "description": "a change-log offset (exact) or an ISO-8601 timestamp with offset (best "
                    "effort): answer a delta of the changes after it"},
    {"name": "fields", "in": "query", "schema": {"type": "string"},
     "description": "comma-separated fields to return (id is always included)"},
    {"name": "limit", "in": "query",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"},
     "description": "nextCursor of the previous page"},
    {"name": "etag", "in": "query", "schema": {"type": "string"},
     "description": "same as If-None-Match"},
    {"name": "compress", "in": "query", "schema": {"type": "boolean"},
     "description": "true: gzip the body whatever its size; false: never"},
    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
]


def _list_operation(resource: Resource) -> dict[str, Any]:
    name = resource.name
    return {
        "operationId": f"list_{resource.table}",
        "summary": f"{name}: a page of the list, or a delta since an offset",
        "tags": ["reads"],
        "parameters": _LIST_PARAMETERS,
        "responses": {
            "200": {**_json({"oneOf": [_ref(f"{resource.table}_page"),
                                       _ref(f"{resource.table}_delta")]}),
                    "headers": {"ETag": {"schema": {"type": "string"}}}},
            "304": {"description": "not modified since the ETag (no body, no query)"},
            **_errors(400, 401, 403, 410, 429, 503),
        },
    }


def _item_operation(resource: Resource) -> dict[str, Any]:
    return {
        "operationId": f"get_{resource.table}",
        "summary": f"one row of {resource.name}, when the caller may see it",
        "tags": ["reads"],
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": _UUID},
                       {"name": "fields", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": _json(_ref(resource.table)),
                      **_errors(400, 401, 403, 404, 429, 503)},
    }


def _write_operation(op_id: str, summary: str, fields: Any, status: int, result: str,
                     path_param: bool = True) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": ["workflow"],
        "responses": {str(status): _json(_ref(result), "done"),
                      **_errors(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)},
    }
    if path_param:
        operation["parameters"] = [{"name": "id", "in": "path", "required": True,
                                    "schema": _UUID}]
    required = any(f.required for f in fields)
    operation["requestBody"] = {"required": required, "content": {
        "application/json": {"schema": body_schema(fields)}}}
    return operation


_ACTION_SUMMARY = {
    "submit": "submit a draft (requester): draft -> pending_a1",
    "approve": "approve at the caller's level: pending_aN -> pending_aN+1 / approved",
    "reject": "reject at the caller's level: pending_aN -> rejected",
    "cancel": "cancel (requester or admin) before the order",
    "quotations": "add a supplier quotation (buyer): approved -> quoting",
    "orders": "issue the purchase order for a quotation (buyer): quoting -> ordered",
    "in-transit": "the order's delivery is on its way (buyer)",
    "delivered": "the order was delivered (buyer): the request becomes delivered",
}
_ACTION_RESULT = {"quotations": "quotations", "orders": "purchase_orders"}


def _ops(summary: str, schema: dict[str, Any], *, auth: bool = False,
         extra: tuple[int, ...] = (), content_type: str = "application/json"
         ) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {
        content_type: {"schema": schema}}}}
    for status in extra:
        responses[str(status)] = (
            {"description": "not healthy, or not ready: the same body",
             "content": {content_type: {"schema": schema}}} if status == 503
            else _errors(status)[str(status)])
    operation: dict[str, Any] = {"summary": summary, "tags": ["operations"],
                                 "responses": responses}
    if not auth:
        operation["security"] = []
    return {"get": operation}


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail", "code"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                           "status": {"type": "integer"}, "detail": {"type": "string"},
                           "code": {"type": "string", "enum": sorted(CODES)}},
        },
        "NotificationPreferences": {
            **body_schema(PREFERENCES),
            "properties": {**body_schema(PREFERENCES)["properties"],
                           "updatedAt": {"type": ["string", "null"]}},
        },
    }
    for resource in RESOURCES.values():
        row = _row_schema(resource)
        schemas[resource.table] = row
        common = {"data": {"type": "array", "items": row}, "etag": {"type": ["string", "null"]},
                  "timestamp": {"type": "string"}, "offset": {"type": "integer"}}
        schemas[f"{resource.table}_page"] = {
            "type": "object", "required": ["data", "isDelta", "offset"],
            "properties": {**common, "isDelta": {"const": False},
                           "nextCursor": {"type": ["string", "null"]}}}
        schemas[f"{resource.table}_delta"] = {
            "type": "object", "required": ["data", "isDelta", "offset"],
            "properties": {**common, "isDelta": {"const": True},
                           "hasMore": {"type": "boolean"}},
            "description": "each row carries _operation: insert | update | delete"}
        paths[resource.path] = {"get": _list_operation(resource)}
        paths[resource.path + "/{id}"] = {"get": _item_operation(resource)}

    paths["/api/purchase-requests"]["post"] = _write_operation(
        "create_purchase_request", "create a purchase request (draft, or submitted)",
        CREATE_REQUEST, 201, "purchase_requests", path_param=False)
    for action, (fields, status, _call) in REQUEST_ACTIONS.items():
        paths[f"/api/purchase-requests/{{id}}/{action}"] = {"post": _write_operation(
            f"{action.replace('-', '_')}_purchase_request", _ACTION_SUMMARY[action], fields,
            status, _ACTION_RESULT.get(action, "purchase_requests"))}
    for action, (fields, status, _call) in ORDER_ACTIONS.items():
        paths[f"/api/purchase-orders/{{id}}/{action}"] = {"post": _write_operation(
            f"{action.replace('-', '_')}_purchase_order", _ACTION_SUMMARY[action], fields,
            status, "purchase_orders")}

    prefs = _ref("NotificationPreferences")
    paths["/api/user/notification-preferences"] = {
        "get": {"operationId": "get_notification_preferences", "tags": ["user"],
                "summary": "the caller's notification preferences",
                "responses": {"200": _json(prefs), **_errors(401, 429, 503)}},
        "put": {"operationId": "put_notification_preferences", "tags": ["user"],
                "summary": "replace the caller's preferences (applied at once)",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": body_schema(PREFERENCES)}}},
                "responses": {"200": _json(prefs),
                              **_errors(400, 401, 413, 415, 422, 429, 503)}},
    }
    any_object = {"type": "object"}
    paths["/api/metrics/realtime"] = _ops(
        "activeConnections, requestsPerMinute, cacheHitRate, averageLatency (ms)",
        {"type": "object", "properties": {
            "activeConnections": {"type": "integer"}, "requestsPerMinute": {"type": "integer"},
            "cacheHitRate": {"type": "number"}, "averageLatency": {"type": "number"}}},
        auth=True, extra=(401, 429))
    paths["/api/me"] = {"get": {
        "operationId": "get_me", "tags": ["user"],
        "summary": "who the caller is: principal (as the rules see them), user row, department",
        "responses": {"200": _json({"type": "object", "required": ["principal", "user"],
                                    "properties": {
                                        "principal": {"type": "object", "properties": {
                                            "user_id": _UUID, "role": {"type": "string"},
                                            "department_id": {"type": ["string", "null"]}}},
                                        "user": _ref("users"),
                                        "department": {"anyOf": [_ref("departments"),
                                                                 {"type": "null"}]},
                                        "token_expires_at": {"type": "integer"}}}),
                      **_errors(401, 404, 429, 503)}}}
    paths["/api/audit"] = {"get": {
        "operationId": "get_audit", "tags": ["operations"],
        "summary": "the audit trail, oldest first (admins)",
        "parameters": [
            {"name": "since", "in": "query", "description": "rows after this audit row id",
             "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"},
             "description": "nextCursor of the previous page"},
            {"name": "table", "in": "query", "description": "table_name equals (http, ...)",
             "schema": {"type": "string", "minLength": 1, "maxLength": 64}},
            {"name": "action", "in": "query", "description": "action equals",
             "schema": {"type": "string", "minLength": 1, "maxLength": 64}}],
        "responses": {"200": _json({"type": "object", "required": ["data", "nextCursor"],
                                    "properties": {
                                        "data": {"type": "array", "items": _ref("AuditRow")},
                                        "nextCursor": {"type": ["string", "null"]},
                                        "timestamp": {"type": "string"}}}),
                      **_errors(400, 401, 403, 429, 503)}}}
    paths["/api/admin/broadcasts"] = {"post": {
        "operationId": "post_broadcast", "tags": ["operations"],
        "summary": "a message to every connected user of the cluster (admins)",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": body_schema(BROADCAST_BODY)}}},
        "responses": {"202": _json({"type": "object", "required": ["id", "scope"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "level": {"type": "string"},
                                        "timestamp": {"type": "string"},
                                        "scope": {"type": "string",
                                                  "enum": ["cluster", "node"]},
                                        "processes": {"type": "integer"},
                                        "sockets": {"type": "integer"}}}, "Accepted"),
                      **_errors(400, 401, 403, 413, 415, 422, 429)}}}
    schemas["AuditRow"] = {"type": "object", "properties": {
        "id": {"type": "integer"}, "table_name": {"type": "string"},
        "record_id": {"type": "string"}, "action": {"type": "string"},
        "actor_id": {"type": ["string", "null"], "format": "uuid"},
        "details": {"type": "object"}, "created_at": _TIME}}
    paths["/api/supervisor"] = _ops("the supervisor tree (admins)", any_object, auth=True,
                                    extra=(401, 403, 429))
    paths["/health/live"] = _ops("liveness", any_object)
    paths["/health/ready"] = _ops("readiness", any_object, extra=(503,))
    paths["/health/realtime"] = _ops("seed 8.2 health metrics", any_object, extra=(503,))
    paths["/metrics"] = _ops("Prometheus exposition", {"type": "string"},
                             content_type="text/plain")
    paths["/openapi.json"] = _ops("this document", any_object)
    paths["/"] = _ops("the node's name and endpoints", any_object)
    paths.update({**DASHBOARD_PATHS, **HISTORY_PATHS})

    return {
        "openapi": "3.1.0",
        "info": {"title": "Sinal HTTP API", "version": "1",
                 "description": "REST reads with ETag/304 and deltas by change-log offset, "
                                "the procurement workflow, health and metrics. Errors are "
                                "RFC 9457 problem details with a `code`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
