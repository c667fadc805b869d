"""Helpers for the actor runtime tests: scripted workers, settling, leak checks.

Imported by the test modules as ``engine_testing`` (pytest puts this folder on
``sys.path``); the fixtures live in conftest.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio
import trio.testing

from sinal.engine.supervisor import ChildSpec, Restart


class Boom(Exception):
    """The crash a scripted worker raises on command."""


class Control:
    """Handle of one run of a scripted worker: tell it to crash or exit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._send, self.commands = trio.open_memory_channel[str](1)

    def crash(self) -> None:
        self._send.send_nowait("crash")

    def exit(self) -> None:
        self._send.send_nowait("exit")


class Workers:
    """Scripted children that log their starts and ends, for order assertions.

    ``log`` holds ``("start", name)`` when a run begins and ``("end", name)`` when
    it ends for any reason (crash, exit, stop). ``current[name]`` controls the
    latest run.
    """

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.current: dict[str, Control] = {}
        self.starts: Counter[str] = Counter()
        self.fail_next_start: set[str] = set()
        self.cleanup_seconds: dict[str, float] = {}
        self._start_waiters: dict[str, trio.Event] = {}

    async def next_start(self, name: str) -> None:
        """Wait until ``name`` begins its next run."""
        event = self._start_waiters[name] = trio.Event()
        await event.wait()

    def spec(
        self,
        name: str,
        restart: Restart = Restart.PERMANENT,
        *,
        shutdown: float = 1.0,
        kind: str = "worker",
    ) -> ChildSpec:
        return ChildSpec(
            name=name,
            start=self.run,
            args=(name,),
            restart=restart,
            shutdown=shutdown,
            kind=kind,
        )

    async def run(self, name: str, *, task_status: trio.TaskStatus[Control]) -> None:
        self.starts[name] += 1
        waiter = self._start_waiters.pop(name, None)
        if waiter is not None:
            waiter.set()
        if name in self.fail_next_start:
            self.fail_next_start.discard(name)
            raise Boom(f"{name} failed to start")
        control = Control(name)
        self.current[name] = control
        self.log.append(("start", name))
        try:
            task_status.started(control)
            command = await control.commands.receive()
            if command == "crash":
                raise Boom(f"{name} crashed")
        finally:
            cleanup = self.cleanup_seconds.get(name)
            if cleanup:
                with trio.CancelScope(shield=True):
                    await trio.sleep(cleanup)
            self.log.append(("end", name))

    def starts_and_ends(self) -> list[tuple[str, str]]:
        out, self.log = self.log, []
        return out


async def settle() -> None:
    """Let every task run until all are blocked (no virtual time passes)."""
    await trio.testing.wait_all_tasks_blocked()


def live_task_names() -> list[str]:
    """Names of every task in the run except the test's own machinery."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                names.append(child.name)
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return names


def engine_tasks() -> list[str]:
    """Live tasks run by the actor runtime (supervisors, pools and their children)."""
    return [name for name in live_task_names() if name.startswith("sinal.engine.")]


def node(status: dict[str, Any], *path: str) -> dict[str, Any]:
    """The status node reached by child names from ``status``."""
    current = status
    for name in path:
        matches = [c for c in current["children"] if c["name"] == name]
        assert matches, f"no child {name!r} in {[c['name'] for c in current['children']]}"
        current = matches[0]
    return current
