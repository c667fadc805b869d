"""The browser app: its pages, the files of web/, and the development login.

| route | answer |
|---|---|
| GET / | to browsers (Accept prefers text/html): the start page (login); to anything else |
|       | (`Accept: application/json`, `*/*`, none): the JSON index of api/ops_routes.py |
| GET /solicitacoes, /dashboard, /configuracoes | the pages |
| GET /web/<path> | a file of web/ (JavaScript modules, CSS, HTML) |
| GET /web/config.json | what the pages must know: WebSocket and HTTP ports, development |
| GET /api/dev/users | SINAL_ENV=development only (404 otherwise): the active users, each |
|                    | with a 12 h token, for the login page's "pick a demo user" |

The files are read once, when the app is made (web/ is small and ships inside the package
as `sinal/web`); a request names a file by its path relative to web/ and is answered from
that table only, so no request reaches the file system (no traversal: `..`, absolute or
encoded paths name no entry and are 404). Answers carry a strong ETag (304 on
`If-None-Match`) and `Cache-Control: no-cache`: the browser keeps each file and asks again
each time, since the names carry no version. HTML pages get a Content-Security-Policy that
allows only this origin's scripts and styles (and WebSockets anywhere: the socket is on
WEBSOCKET_PORT, or behind the proxy's /ws).

These routes belong to the blueprint `pages`: they are the app, not the REST API, and are
not in /openapi.json. What they need of the node (SINAL_ENV, compression, the WebSocket
URL, the token secret) is gathered once by `site_of`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from quart import Blueprint, Response, request

from sinal.api.context import ApiContext
from sinal.api.http_rules import gzip_body, wants_gzip
from sinal.api.problems import Problem
from sinal.domain.tokens import mint_token

WEB_ROOT = Path(__file__).parent.parent / "web"  # sinal/web: the repository's web/ folder
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
PAGES = {"/solicitacoes": "solicitacoes.html", "/dashboard": "dashboard.html",
         "/configuracoes": "configuracoes.html"}
START_PAGE = "index.html"
CACHE_CONTROL = "no-cache"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
DEV_TOKEN_SECONDS = 12 * 3600
ROLE_ORDER = ("requester", "approver_a1", "approver_a2", "approver_a3", "buyer", "admin")


@dataclass(frozen=True, slots=True)
class WebFile:
    body: bytes
    gzipped: bytes  # compressed once, at load
    content_type: str
    etag: str


def load_web_files(root: Path = WEB_ROOT, compression_level: int = 6) -> dict[str, WebFile]:
    """Every servable file under `root`, by its path relative to it (posix)."""
    files: dict[str, WebFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = hashlib.sha256(body).hexdigest()[:20]
        files[path.relative_to(root).as_posix()] = WebFile(
            body, gzip_body(body, compression_level), content_type, etag)
    return files


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Site:
    """What the pages need of the node, in one place."""

    development: bool  # SINAL_ENV=development: the demo login exists
    compression: bool  # ENABLE_COMPRESSION
    compression_level: int  # COMPRESSION_LEVEL
    websocket_url: Callable[[], str]  # the node's bound WebSocket URL (known once it runs)
    jwt_secret: str  # what the development login signs its tokens with


def site_of(api: ApiContext) -> Site:
    settings = api.settings
    return Site(development=settings.development, compression=settings.compression,
                compression_level=settings.compression_level,
                websocket_url=api.realtime.websocket_url, jwt_secret=api.auth.tokens.secret)


def register_pages(api: ApiContext) -> None:
    app = api.app
    site = site_of(api)
    files = load_web_files(compression_level=site.compression_level)
    pages = Blueprint("pages", __name__)

    def answer(name: str) -> Response:
        web_file = files.get(name)
        if web_file is None:
            raise Problem(404, "not_found", f"no file {name[:200]!r} in the web app")
        headers = {"ETag": f'"{web_file.etag}"', "Cache-Control": CACHE_CONTROL,
                   "X-Content-Type-Options": "nosniff", "Vary": "Accept-Encoding"}
        if web_file.content_type.startswith("text/html"):
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            headers["Referrer-Policy"] = "no-referrer"
        if request.if_none_match.contains_weak(web_file.etag):
            return api.empty(304, headers)
        body = web_file.body
        if wants_gzip(site.compression, request.args.get("compress"),
                      request.headers.get("Accept-Encoding"), len(body)):
            body = web_file.gzipped
            headers["Content-Encoding"] = "gzip"
        response: Response = app.response_class(body, status=200, headers=headers,
                                                content_type=web_file.content_type)
        return response

    def page_view(name: str) -> Callable[[], Awaitable[Response]]:
        async def view() -> Response:
            return answer(name)

        return view

    @pages.before_app_request
    async def start_page() -> Response | None:
        """GET / is the JSON index for programs and the start page for browsers."""
        if request.path != "/" or request.method not in ("GET", "HEAD"):
            return None
        if request.accept_mimetypes.best_match(("application/json", "text/html")) != "text/html":
            return None
        return answer(START_PAGE)

    for route, name in PAGES.items():
        pages.add_url_rule(route, route.strip("/"), page_view(name), methods=["GET"])

    @pages.get("/web/config.json")
    async def web_config() -> Response:
        server = request.scope.get("server") or (None, None)  # the socket that took this
        return api.json({"httpPort": server[1],
                         "websocketPort": _port(site.websocket_url()),
                         "websocketPath": "/ws",
                         "development": site.development},
                        headers={"Cache-Control": "no-store"})

    # merge_slashes=False: `/web//x` names no file (404) rather than redirecting to `/web/x`
    @pages.get("/web/<path:name>", merge_slashes=False)
    async def web_file(name: str) -> Response:
        return answer(name)

    if site.development:
        @pages.get("/api/dev/users")
        async def dev_users() -> Response:
            def work(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
                rows: list[dict[str, Any]] = conn.execute(
                    "SELECT u.id::text AS id, u.email, u.name, u.role, "
                    "u.department_id::text AS department_id, d.name AS department "
                    "FROM users u LEFT JOIN departments d ON d.id = u.department_id "
                    "WHERE u.is_active ORDER BY array_position(%s::text[], u.role), u.email",
                    (list(ROLE_ORDER),)).fetchall()
                return rows

            rows = await api.run(work)
            return api.json({"users": [
                {"id": row["id"], "email": row["email"], "name": row["name"],
                 "role": row["role"], "departmentId": row["department_id"],
                 "department": row["department"],
                 "token": mint_token(site.jwt_secret, row["id"], row["role"],
                                     ttl_seconds=DEV_TOKEN_SECONDS)}
                for row in rows]},
                headers={"Cache-Control": "no-store"})

    app.register_blueprint(pages)
