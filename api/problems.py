"""Problem details (RFC 9457): the body of every 4xx and 5xx answer.

    {"type": "about:blank", "title": "Conflict", "status": 409,
     "detail": "cannot submit a request in status approved", "code": "invalid_transition"}

`type` is `about:blank`, so `title` is the status's reason phrase; `code` is the stable,
documented machine-readable name (README "HTTP API"). Handlers raise `Problem`; the app's
error handler turns it into a response with `Content-Type: application/problem+json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"

# The codes the API answers with, by status (kept true by tests/api/test_api_openapi.py).
CODES: dict[str, str] = {
    "malformed_json": "400: the body is not JSON, or gives a key twice",
    "malformed_request": "400: the HTTP request itself is malformed (e.g. both Content-Length "
                         "and Transfer-Encoding); the connection is closed",
    "invalid_parameter": "400: a query parameter is malformed (the detail names it)",
    "invalid_cursor": "400: the pagination cursor was not made by this API",
    "unknown_field": "400: ?fields= names a field the resource does not have",
    "invalid_filter": "400: /api/dashboard names an unknown figure or window (the valid "
                      "names are in `aggregates` and `windows`)",
    "auth_required": "401: no bearer token",
    "auth_failed": "401: the token is forged, malformed, or its user unknown or inactive",
    "token_expired": "401: the token has expired",
    "forbidden": "403: the caller's role may not do this",
    "not_found": "404: no such route or row",
    "method_not_allowed": "405: the route exists, the method does not (see Allow)",
    "invalid_transition": "409: the workflow does not allow this step now",
    "resync": "410: `since` is older than the log keeps (or ahead of it): refetch the list",
    "payload_too_large": "413: the body is over 1 MiB",
    "unsupported_media_type": "415: a request body must be Content-Type: application/json",
    "invalid_body": "422: the body is JSON but a value is wrong (the detail names it)",
    "invalid_title": "422: title must be 1-200 characters",
    "invalid_amount": "422: amount must be a number from 0 to 999999999999.99",
    "invalid_department": "422: department_id names no department",
    "invalid_supplier": "422: supplier_id names no supplier",
    "invalid_delivery_days": "422: delivery_days must be 0-3650",
    "rate_limited": "429: over RATE_LIMIT_REQUESTS_PER_MINUTE; see Retry-After",
    "headers_too_large": "431: the request line or headers are too large; the connection is "
                         "closed",
    "internal_error": "500: a bug; the log has the details",
    "database_unavailable": "503: the database does not answer; retry later",
    "unhealthy": "503: a health check failed",
}


class Problem(Exception):
    """An error a caller can cause or must be told about, as an HTTP answer."""

    def __init__(self, status: int, code: str, detail: str, *,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        detail = detail.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.code, self.detail, self.extra)


def problem_body(status: int, code: str, detail: str,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "code": code, **(extra or {})}


def bad_parameter(name: str, expected: str) -> Problem:
    return Problem(400, "invalid_parameter", f"query parameter {name!r}: {expected}",
                   extra={"parameter": name})


def invalid_body(field: str, expected: str) -> Problem:
    return Problem(422, "invalid_body", f"{field}: {expected}", extra={"field": field})
