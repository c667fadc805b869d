"""The status snapshot of a supervisor tree, and its text rendering.

``Supervisor.status()`` returns a tree of plain dicts (JSON-serialisable as is:
``json.dumps(root.status())`` works). Every node has these keys:

========== ==============================================================
type       "supervisor", "pool" or "actor"
name       the child's name in its parent (or the root's own name)
kind       what it is ("supervisor", "pool", "database_listener", ...)
state      starting | running | restarting | stopped | failed
restart    permanent | transient | temporary (null for the root)
restarts   how many times its parent restarted it
last_error null or {"type", "message", "time" (UTC ISO-8601)}
uptime     seconds since its current run reported ready (null if not running)
inbox      null or {"depth", "capacity", "refused"}
overruns   times it outlived its shutdown deadline and was cancelled
========== ==============================================================

A supervisor node adds ``strategy``, ``intensity`` ({"max_restarts", "period",
"recent_restarts"}), ``backoff`` ({"base", "cap", "jitter"}) and ``children``.
A pool node (dynamic supervisor) adds ``child_kind``, ``max_children``,
``intensity``, ``backoff``, ``counts`` ({"live", "starting", "running",
"restarting", "started_total", "refused_total", "exited_total",
"crashed_total", "restarts_total", "overruns_total"}) and
``top_by_inbox_depth``, a short list of actor nodes, deepest inbox first.

`render_status` prints such a tree for ``sinal status``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

__all__ = ["ActorState", "StatusNode", "error_info", "render_status"]

StatusNode = dict[str, Any]
"""One node of the status tree (see the module docstring for its keys)."""


class ActorState(enum.StrEnum):
    """Life-cycle state of a supervised child, as shown in the status tree."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    FAILED = "failed"


def error_info(error: BaseException) -> dict[str, str]:
    """``{"type", "message", "time"}`` describing ``error``, stamped now (UTC)."""
    return {
        "type": type(error).__qualname__,
        "message": str(error),
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _headline(node: StatusNode) -> str:
    kind = node.get("type")
    if kind == "supervisor":
        intensity = node["intensity"]
        what = (
            f"supervisor {node['strategy']}, intensity {intensity['max_restarts']} "
            f"in {intensity['period']:g}s ({intensity['recent_restarts']} recent)"
        )
    elif kind == "pool":
        counts = node["counts"]
        what = f"pool of {node['child_kind']}, {counts['live']}/{node['max_children']} live"
    else:
        what = str(node.get("kind", "actor"))
    parts = [f"{node['name']} [{what}] {node.get('state', '?')}"]
    if node.get("uptime") is not None:
        parts.append(f"up {_duration(node['uptime'])}")
    if node.get("restarts"):
        parts.append(f"restarts {node['restarts']}")
    inbox = node.get("inbox")
    if inbox:
        refused = f" ({inbox['refused']} refused)" if inbox.get("refused") else ""
        parts.append(f"inbox {inbox['depth']}/{inbox['capacity']}{refused}")
    if node.get("overruns"):
        parts.append(f"shutdown overruns {node['overruns']}")
    return ", ".join(parts)


def _details(node: StatusNode) -> list[str]:
    lines: list[str] = []
    error = node.get("last_error")
    if error:
        lines.append(f"last error: {error['type']}: {error['message']} at {error['time']}")
    if node.get("type") == "pool":
        c = node["counts"]
        lines.append(
            f"starting {c['starting']}, running {c['running']}, restarting {c['restarting']}; "
            f"started {c['started_total']}, refused {c['refused_total']}, "
            f"exited {c['exited_total']}, crashed {c['crashed_total']}"
        )
        if node.get("top_by_inbox_depth"):
            lines.append("top by inbox depth:")
    return lines


def _render(
    node: StatusNode, prefix: str, connector: str, child_prefix: str, out: list[str]
) -> None:
    out.append(prefix + connector + _headline(node))
    inner = prefix + child_prefix
    children: list[StatusNode] = list(node.get("children") or [])
    top: list[StatusNode] = list(node.get("top_by_inbox_depth") or [])
    detail_bar = "│   " if children else "    "
    for line in _details(node):
        out.append(inner + detail_bar + line if children else inner + "    " + line)
    for index, child in enumerate(children):
        last = index == len(children) - 1
        _render(child, inner, "└── " if last else "├── ", "    " if last else "│   ", out)
    for index, entry in enumerate(top):
        last = index == len(top) - 1
        _render(entry, inner + "    ", "└── " if last else "├── ", "    " if last else "│   ", out)


def render_status(root: StatusNode) -> str:
    """The status tree as indented text, one node per line (for ``sinal status``)."""
    out: list[str] = []
    _render(root, "", "", "", out)
    return "\n".join(out)
