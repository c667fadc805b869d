"""Where a Python server's time goes: `py-spy record` on its pid while load runs.

py-spy samples without stopping the process (`--nonblocking`), 200 times a second, and
writes collapsed stacks; `summarise_collapsed` turns them into the functions with the
largest self and inclusive shares of samples. A C call (a socket `send`, a syscall) counts
for the Python function that made it.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# frames every stack of a server passes through: left out of the inclusive list
WRAPPERS = ("(sinal)", "(engine/cli.py)", "(trio/_core/_run.py)", "(engine/supervisor.py)",
            "(threading.py)", "(runpy.py)", "(<frozen runpy>)", "(trio/_threads.py)",
            "(concurrent/futures/thread.py)", "(engine/actor.py)", "(engine/dynamic.py)")


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


class Profile:
    """`with Profile(pid, seconds, out) as p: ...load...` then `p.summary`."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200) -> None:
        self.pid = pid
        self.seconds = max(1, math.ceil(seconds))
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary: dict[str, Any] = {}

    def __enter__(self) -> Profile:
        exe = py_spy()
        if exe is None:
            self.summary = {"error": "py-spy not installed (pip install py-spy)"}
            return self
        self.out.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--duration", str(self.seconds),
             "--rate", str(self.rate), "--nonblocking", "--format", "raw", "--threads",
             "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.out.exists():
            self.summary = summarise_collapsed(self.out.read_text())
        else:
            self.summary = {"error": "py-spy produced nothing: "
                                     + err.decode(errors="replace")[-300:]}


def summarise_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_thread[frames[0]] += count
        self_time[_short(frames[-1]) if len(frames) > 1 else "(no Python frame)"] += count
        for name in {_short(f) for f in frames[1:]}:
            inclusive[name] += count
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "percent": round(100 * count / total, 1)}
                for name, count in counter.most_common(top)]

    for name in list(inclusive):
        if name.endswith(WRAPPERS):
            del inclusive[name]
    return {"samples": total, "self": share(self_time), "inclusive": share(inclusive),
            "threads": share(by_thread)[:6]}


def _short(frame: str) -> str:
    # "send (actors/transport.py:123)" -> "send (actors/transport.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def top_line(summary: dict[str, Any], count: int = 4) -> str:
    return ", ".join(f"{s['function']} {s['percent']}%" for s in summary.get("self", [])[:count])
