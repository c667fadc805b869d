"""Run-time failures, told to an operator in one line (README, "Exit codes and messages").

A command that fails at run time prints one line on stderr, `sinal <command>: <what
failed>; <what to check>`, and exits 1; bad settings exit 2 (node.config). `--verbose`
prints the traceback as well. `explain` turns what reached the CLI's edge into that line:

* `OperatorError` (and its subclasses: the embedded servers, an unreachable database,
  migrations) already carries its line;
* a port that cannot be bound surfaces inside the supervisor tree, as a `ChildStartError`
  of the child that binds it (`http`, `websocket`), often inside Trio's exception groups:
  the tree is walked to the leaf, which names the setting and the port;
* anything else is not hidden: one line with the error's type and text, and a pointer to
  `--verbose`.

Passwords in URLs are masked everywhere a URL is shown (`mask_url`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sinal.engine.spec import ChildStartError, SupervisorEscalation

if TYPE_CHECKING:
    from sinal.node.config import Config

EXIT_FAILURE = 1

# The children of the tree (node/wiring.py) that bind a port, and the setting naming it.
BINDING_CHILDREN = {"http": "HTTP_PORT", "websocket": "WEBSOCKET_PORT"}


class OperatorError(RuntimeError):
    """A failure an operator can act on: `str()` is one line saying what failed and what
    to check; `detail` (shown with --verbose) may add the evidence, e.g. a log's tail."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class DatabaseUnavailable(OperatorError):
    """PostgreSQL does not accept a connection (DATABASE_URL, or the embedded server)."""


def mask_url(url: str) -> str:
    """The URL with its password (in the authority or a `password=` parameter) as ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() == "password" for key, _ in pairs):
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs],
                              safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(text: str, *urls: str) -> str:
    """`text` without the passwords of `urls` (error texts may quote a connection string)."""
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            text = text.replace(password, "***")
    return text


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def database_reason(exc: BaseException, url: str) -> str:
    """psycopg's reason in one line, e.g. `... port 1 failed: Connection refused`."""
    reason = first_line(str(exc)) or type(exc).__name__
    reason = reason.removeprefix("connection failed: ")
    return scrub(reason, url)


def database_unavailable(url: str, exc: BaseException, *, embedded: bool) -> DatabaseUnavailable:
    where = "the embedded PostgreSQL" if embedded else "DATABASE_URL"
    check = ("check its log (postgres.log in the data folder)" if embedded else
             "check that the server runs, and DATABASE_URL (host, port, user, password, "
             "database)")
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {mask_url(url)} ({where}): "
        f"{database_reason(exc, url)}; {check}"
    )


def redis_unavailable_warning(url: str, setting: str, exc: BaseException) -> str:
    reason = scrub(first_line(str(exc)) or type(exc).__name__, url)
    return (f"warning: Redis at {mask_url(url)} ({setting}) does not answer ({reason}); "
            "the node serves alone meanwhile (the cluster registry is retried with backoff "
            f"until Redis answers): check {setting}")


# --- the CLI's edge ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explanation:
    message: str
    known: bool  # False: an error Sinal does not recognise (a bug, perhaps): see --verbose
    detail: str = ""


def leaves(exc: BaseException, children: tuple[str, ...] = ()
           ) -> Iterator[tuple[tuple[str, ...], BaseException]]:
    """The errors at the bottom of `exc`, each with the supervisor children it passed through
    (outermost first): through exception groups, start failures and escalations."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner, children)
    elif isinstance(exc, ChildStartError):
        yield from leaves(exc.error, (*children, exc.child))
    elif isinstance(exc, SupervisorEscalation) and exc.last_error is not None:
        yield from leaves(exc.last_error, (*children, exc.child))
    else:
        yield children, exc


def _bind_failure(children: tuple[str, ...], exc: OSError, config: Config) -> str | None:
    child = next((c for c in reversed(children) if c in BINDING_CHILDREN), None)
    if child is None:
        return None
    setting = BINDING_CHILDREN[child]
    port = config.http_port if setting == "HTTP_PORT" else config.websocket_port
    where = f"{config.sinal_host}:{port} ({setting})"
    if isinstance(exc, socket.gaierror):
        return (f"cannot listen on {where}: the address {config.sinal_host!r} does not "
                "resolve; check SINAL_HOST")
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where}: the port is already in use (another Sinal node, "
                f"or another program); stop it or set {setting} to a free port")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where}: permission denied (ports below 1024 need "
                f"privileges); set {setting} to a port above 1023")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: {config.sinal_host} is not an address of this "
                "machine; check SINAL_HOST")
    return f"cannot listen on {where}: {first_line(str(exc))}; check {setting} and SINAL_HOST"


def explain(exc: BaseException, config: Config | None) -> Explanation:
    """One line for what reached the CLI's edge (module docstring)."""
    import psycopg

    found = [(children, leaf) for children, leaf in leaves(exc)
             if not isinstance(leaf, KeyboardInterrupt | SystemExit)]
    if not found:
        found = [((), exc)]
    for children, leaf in found:
        if isinstance(leaf, OperatorError):
            return Explanation(str(leaf), True, leaf.detail)
        if isinstance(leaf, OSError) and config is not None:
            message = _bind_failure(children, leaf, config)
            if message is not None:
                return Explanation(message, True)
        if isinstance(leaf, psycopg.OperationalError) and config is not None:
            url = config.database_url
            where = mask_url(url) + " (DATABASE_URL)" if url else "the embedded PostgreSQL"
            return Explanation(
                f"PostgreSQL at {where} failed: {database_reason(leaf, url)}; check that the "
                "server runs and accepts connections", True)
    children, leaf = found[0]
    where = f" in {'/'.join(children)}" if children else ""
    text = first_line(str(leaf))
    if config is not None:
        text = scrub(text, config.database_url, config.effective_redis_url)
    return Explanation(
        f"unexpected error{where}: {type(leaf).__name__}{': ' + text if text else ''}", False)
