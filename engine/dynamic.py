"""Dynamic supervisor: a bounded pool of children of one type (connections).

Erlang's ``simple_one_for_one``: one start function, children added at run time
with extra arguments, at most ``max_children`` live at once. A start past the
maximum raises `PoolFull` with the reason; the caller (the WebSocket server)
turns that into a refusal for the client and nothing else is disturbed.

Children are temporary by default (a closed connection is not reopened by the
server). Permanent or transient children are restarted one for one, with the
pool's restart intensity and backoff (see `engine.spec`).

Per child the pool keeps one small slotted record and one cancel scope; the
status shows counts and the few children with the deepest inboxes, not the
whole list, so that thousands of connections stay cheap.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from sinal.engine.metrics import ACTOR_RESTARTS, POOL_REFUSED, SHUTDOWN_OVERRUNS
from sinal.engine.spec import (
    ChildSpec,
    InvalidSpec,
    Restart,
    RestartWindow,
    StartFn,
    SupervisorError,
    SupervisorEscalation,
    SupervisorFlags,
    backoff_delay,
    should_restart,
    validate_flags,
    validate_spec,
)
from sinal.engine.status import ActorState, StatusNode, error_info
from sinal.engine.supervisor import ReadyReporter, ask_to_stop, inbox_of, now_or_none

__all__ = ["DynamicSupervisor", "PoolFull", "PoolNotRunning"]

log = logging.getLogger("sinal.supervisor")


class PoolFull(SupervisorError):
    """The pool already has ``max_children`` live children."""

    def __init__(self, pool: str, child_kind: str, limit: int) -> None:
        super().__init__(
            f"pool {pool!r} refused a new {child_kind}: it is at its maximum of "
            f"{limit} live children"
        )
        self.pool = pool
        self.limit = limit


class PoolNotRunning(SupervisorError):
    """The pool is not accepting children (not started yet, or stopping)."""

    def __init__(self, pool: str, state: ActorState) -> None:
        super().__init__(f"pool {pool!r} is not accepting children (it is {state})")
        self.pool = pool


@dataclass(slots=True, eq=False)
class _PoolChild:
    id: int
    state: ActorState = ActorState.STARTING
    restarts: int = 0
    started_at: float | None = None
    value: object = None
    last_error: dict[str, str] | None = None
    stopping: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class DynamicSupervisor:
    """A pool of up to ``max_children`` children started by ``start(*args, task_status)``.

    ``await pool.start_child(*args)`` runs a child in the pool's own nursery and
    returns what it reported ready with; ``await pool.run_child(*args)`` runs it
    in the calling task instead (handy when a server already gives each client a
    task) and returns when it ends. Both refuse with `PoolFull` at the maximum.
    """

    kind = "pool"
    supervises = True

    def __init__(
        self,
        name: str,
        start: StartFn,
        *,
        child_kind: str,
        max_children: int,
        restart: Restart = Restart.TEMPORARY,
        shutdown: float = 5.0,
        flags: SupervisorFlags | None = None,
        rng: Callable[[], float] = random.random,
        top: int = 5,
    ) -> None:
        self.name = name
        self.max_children = max_children
        self.top = top
        self.flags = flags if flags is not None else SupervisorFlags()
        self.spec = ChildSpec(
            name=f"{name}.child", start=start, kind=child_kind, restart=restart, shutdown=shutdown
        )
        self._rng = rng
        self._children: dict[int, _PoolChild] = {}
        self._ids = itertools.count(1)
        self._state = ActorState.STOPPED
        self._accepting = False
        self._running = False
        self._nursery: trio.Nursery | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._emptied = trio.Event()
        self._escalation: SupervisorEscalation | None = None
        self._window = RestartWindow(1.0)
        self._started_at: float | None = None
        self._last_error: dict[str, str] | None = None
        self.started_total = 0
        self.refused_total = 0
        self.exited_total = 0
        self.crashed_total = 0
        self.restarts_total = 0
        self.overruns_total = 0

    def __repr__(self) -> str:
        return f"<DynamicSupervisor {self.name} {len(self._children)}/{self.max_children}>"

    @property
    def state(self) -> ActorState:
        return self._state

    @property
    def live(self) -> int:
        """Children holding a slot (starting, running or waiting to restart)."""
        return len(self._children)

    def _validate(self) -> None:
        where = f"pool {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSpec("pool", "name", f"must be a non-empty string (got {self.name!r})")
        limit = self.max_children
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidSpec(where, "max_children", f"must be an int >= 1 (got {limit!r})")
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 0:
            raise InvalidSpec(where, "top", f"must be an int >= 0 (got {self.top!r})")
        self.flags = validate_flags(self.flags, where)
        self.spec = validate_spec(self.spec)

    # -- life cycle ----------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[DynamicSupervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept children until stopped; then stop them all within their deadline.

        Raises `SupervisorEscalation` if restarted children exceed the intensity.
        """
        if self._running:
            raise RuntimeError(f"pool {self.name!r} is already running")
        self._validate()
        self._running = True
        self._escalation = None
        self._last_error = None
        self._window = RestartWindow(self.flags.period)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with trio.CancelScope() as self._wait_scope:
                        self._accepting = True
                        self._state = ActorState.RUNNING
                        self._started_at = trio.current_time()
                        task_status.started(self)
                        await trio.sleep_forever()
                finally:
                    self._accepting = False
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
        finally:
            self._running = False
            self._accepting = False
            self._nursery = None
            self._wait_scope = None
            self._started_at = None
            failed = self._escalation is not None
            self._state = ActorState.FAILED if failed else ActorState.STOPPED
        if self._escalation is not None:
            self._last_error = error_info(self._escalation)
            log.error("%s", self._escalation)
            raise self._escalation from self._escalation.last_error

    def request_stop(self) -> bool:
        """Stop accepting, stop every child, and let `run` return."""
        if self._wait_scope is None:
            return False
        self._accepting = False
        self._wait_scope.cancel()
        return True

    def _admit(self) -> _PoolChild:
        if not self._accepting:
            raise PoolNotRunning(self.name, self._state)
        if len(self._children) >= self.max_children:
            self.refused_total += 1
            POOL_REFUSED.labels(pool=self.name).inc()
            raise PoolFull(self.name, self.spec.kind, self.max_children)
        child = _PoolChild(next(self._ids))
        self._children[child.id] = child
        self.started_total += 1
        return child

    async def start_child(self, *args: Any) -> Any:
        """Start a child in the pool; returns its ready value.

        Raises `PoolFull` at the maximum, `PoolNotRunning` if the pool is not
        running, and whatever the child raised before it reported ready.
        """
        child = self._admit()
        assert self._nursery is not None
        return await self._nursery.start(self._child_task, child, args, True)

    async def run_child(
        self, *args: Any, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run a child in the calling task, counted and stopped by the pool.

        Forwards the child's ready report to ``task_status``; returns when the
        child is over for good. Refuses like `start_child`; an error before the
        ready report is raised, one after it is recorded in the status and counts
        (``crashed_total``) like any pool child's, not raised.
        """
        child = self._admit()
        await self._child_task(child, args, False, task_status=task_status)

    # -- one child -------------------------------------------------------------------

    async def _child_task(
        self,
        child: _PoolChild,
        args: tuple[Any, ...],
        in_pool_nursery: bool,
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        spec = self.spec

        def on_ready(value: object) -> None:
            child.value = value
            child.state = ActorState.RUNNING
            child.started_at = trio.current_time()

        ever_ready = False
        outer: trio.TaskStatus[Any] = task_status
        try:
            with child.scope:
                while True:
                    reporter = ReadyReporter(
                        outer,
                        on_ready,
                        child.scope if in_pool_nursery else None,
                        self._nursery,
                    )
                    error: Exception | None = None
                    try:
                        await spec.start(*spec.args, *args, task_status=reporter)
                    except Exception as exc:
                        if not ever_ready and not reporter.reported:
                            raise
                        error = exc
                    if not reporter.reported and error is None:
                        if not ever_ready:
                            raise RuntimeError(
                                "returned before reporting ready (task_status.started())"
                            )
                        error = RuntimeError("returned before reporting ready")
                    if reporter.reported:
                        ever_ready = True
                        outer = trio.TASK_STATUS_IGNORED
                    child.started_at = None
                    if error is not None:
                        self.crashed_total += 1
                        child.last_error = error_info(error)
                        child.state = ActorState.FAILED
                    else:
                        self.exited_total += 1
                        child.state = ActorState.STOPPED
                    if child.stopping or not should_restart(spec.restart, error):
                        break
                    recent = self._window.record(trio.current_time())
                    if recent > self.flags.intensity:
                        self._escalate(error)
                        break
                    child.state = ActorState.RESTARTING
                    await trio.sleep(backoff_delay(self.flags, recent - 1, self._rng()))
                    child.restarts += 1
                    self.restarts_total += 1
                    ACTOR_RESTARTS.labels(kind=spec.kind).inc()
                    child.state = ActorState.STARTING
            if not ever_ready:
                raise PoolNotRunning(self.name, self._state)
        finally:
            del self._children[child.id]
            if not self._children:
                self._emptied.set()

    def _escalate(self, error: Exception | None) -> None:
        if self._escalation is None:
            flags = self.flags
            self._escalation = SupervisorEscalation(
                self.name, self.spec.kind, error, flags.intensity, flags.period
            )
        self.request_stop()

    async def _wait_until_empty(self) -> None:
        if self._children:
            self._emptied = trio.Event()
            await self._emptied.wait()

    async def _stop_all(self) -> None:
        """Ask every child to stop at once, wait out the deadline, cancel the rest."""
        deadline = self.spec.shutdown
        for child in list(self._children.values()):
            child.stopping = True
            running = child.state is ActorState.RUNNING
            if not (deadline > 0 and running and ask_to_stop(child.value)):
                child.scope.cancel()
        if deadline > 0:
            with trio.move_on_after(deadline):
                await self._wait_until_empty()
            if self._children:
                late = len(self._children)
                self.overruns_total += late
                SHUTDOWN_OVERRUNS.labels(kind=self.spec.kind).inc(late)
                log.warning(
                    "pool %r: %d children did not stop within %gs; cancelling",
                    self.name,
                    late,
                    deadline,
                )
        for child in list(self._children.values()):
            child.scope.cancel()
        await self._wait_until_empty()

    # -- status ----------------------------------------------------------------------

    def status(self) -> StatusNode:
        """Counts and the ``top`` deepest inboxes (see `engine.status`)."""
        now = now_or_none()
        states = {state: 0 for state in ActorState}
        for child in self._children.values():
            states[child.state] += 1
        with_inbox: list[tuple[int, int, _PoolChild]] = []
        for child in self._children.values():
            inbox = inbox_of(child.value)
            if inbox is not None:
                with_inbox.append((inbox["depth"], -child.id, child))
        deepest = [entry[2] for entry in heapq.nlargest(self.top, with_inbox)]
        flags = self.flags
        uptime = None
        if self._started_at is not None and now is not None:
            uptime = now - self._started_at
        return {
            "type": "pool",
            "name": self.name,
            "kind": self.kind,
            "state": self._state.value,
            "restart": None,
            "restarts": 0,
            "last_error": self._last_error,
            "uptime": uptime,
            "inbox": None,
            "overruns": self.overruns_total,
            "child_kind": self.spec.kind,
            "child_restart": str(self.spec.restart),
            "max_children": self.max_children,
            "intensity": {
                "max_restarts": flags.intensity,
                "period": flags.period,
                "recent_restarts": self._window.recent(now) if now is not None else 0,
            },
            "backoff": {
                "base": flags.backoff_base,
                "cap": flags.backoff_cap,
                "jitter": flags.backoff_jitter,
            },
            "counts": {
                "live": len(self._children),
                "starting": states[ActorState.STARTING],
                "running": states[ActorState.RUNNING],
                "restarting": states[ActorState.RESTARTING],
                "started_total": self.started_total,
                "refused_total": self.refused_total,
                "exited_total": self.exited_total,
                "crashed_total": self.crashed_total,
                "restarts_total": self.restarts_total,
                "overruns_total": self.overruns_total,
            },
            "top_by_inbox_depth": [self._child_status(c, now) for c in deepest],
        }

    def _child_status(self, child: _PoolChild, now: float | None) -> StatusNode:
        uptime = None
        if child.started_at is not None and now is not None:
            uptime = now - child.started_at
        name = getattr(child.value, "name", None)
        return {
            "type": "actor",
            "name": name if isinstance(name, str) else f"{self.name}#{child.id}",
            "kind": self.spec.kind,
            "state": child.state.value,
            "restart": str(self.spec.restart),
            "restarts": child.restarts,
            "last_error": child.last_error,
            "uptime": uptime,
            "inbox": inbox_of(child.value),
            "overruns": 0,
        }
