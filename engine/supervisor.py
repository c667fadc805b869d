"""Supervisors in the OTP mould, on Trio: the running side of supervision.

A `Supervisor` starts its children in order (each only after the previous one
reported ready through ``task_status.started()``), watches them, restarts them
according to its `Strategy` and each child's `Restart` type, and stops them in
reverse order. More than ``intensity`` restarts within ``period`` seconds and it
gives up: it stops every child (reverse order) and raises `SupervisorEscalation`
to whoever started it; a parent supervisor treats that as the crash of a child.

Restarts back off exponentially with jitter (see `backoff_delay`), so that a
database that is down is not hammered. A stopping child is first asked politely
(``request_stop()`` on the value it reported ready with, if it has one: an
`~engine.actor.ActorRef`, a supervisor, a pool), else cancelled; past its
``shutdown`` deadline it is cancelled and the overrun logged and counted.

The specs, flags, errors and their validation are plain data in `engine.spec`;
they are re-exported here, so ``from sinal.engine.supervisor import ChildSpec``
keeps working. The child plumbing below (`ReadyReporter`, `stop_within_deadline`
and friends) is shared with the dynamic pool in `engine.dynamic`.

Semantics follow Erlang/OTP's ``supervisor`` (see docs/actors.md); the design
notes at the top of each method say where Trio changes the picture.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from sinal.engine.metrics import ACTOR_RESTARTS, SHUTDOWN_OVERRUNS, SUPERVISOR_ESCALATIONS
from sinal.engine.spec import (
    ChildSpec,
    ChildStartError,
    InvalidSpec,
    Restart,
    RestartWindow,
    Strategy,
    SupervisorError,
    SupervisorEscalation,
    SupervisorFlags,
    backoff_delay,
    should_restart,
    validate_flags,
    validate_spec,
)
from sinal.engine.status import ActorState, StatusNode, error_info

__all__ = [
    "ChildSpec",
    "ChildStartError",
    "InvalidSpec",
    "Restart",
    "RestartWindow",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorEscalation",
    "SupervisorFlags",
    "backoff_delay",
]

log = logging.getLogger("sinal.supervisor")


# ------------------------------------------------------------------ child plumbing


class ReadyReporter:
    """The ``task_status`` a supervised child gets: records readiness, then forwards.

    With ``shield`` (the child's cancel scope) and ``nursery`` (the supervisor's),
    the child is shielded from outside cancellation once it has been moved into
    that nursery: from then on only its supervisor stops it, in reverse start
    order with its deadline. A cancellation from outside reaches the supervisor,
    which does that shutdown and then lets the cancellation through.
    """

    __slots__ = ("_outer", "_on_ready", "_shield", "_nursery", "reported")

    def __init__(
        self,
        outer: trio.TaskStatus[Any],
        on_ready: Callable[[object], None],
        shield: trio.CancelScope | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._outer = outer
        self._on_ready = on_ready
        self._shield = shield
        self._nursery = nursery
        self.reported = False

    def started(self, value: object = None) -> None:
        if self.reported:
            raise RuntimeError("called 'started' twice on the same task status")
        self.reported = True
        self._on_ready(value)
        self._outer.started(value)
        # If the start was cancelled meanwhile, Trio leaves the task where it was,
        # and there it must stay cancellable.
        if self._shield is not None and (
            trio.lowlevel.current_task().parent_nursery is self._nursery
        ):
            self._shield.shield = True


def now_or_none() -> float | None:
    """``trio.current_time()``, or None outside a Trio run."""
    try:
        return trio.current_time()
    except RuntimeError:
        return None


def inbox_of(value: object) -> dict[str, int] | None:
    """The inbox status of a child's ready value, if it has one."""
    inbox_status = getattr(value, "inbox_status", None)
    if callable(inbox_status):
        result: dict[str, int] = inbox_status()
        return result
    return None


def nested_tree(value: object, start: object) -> Any:
    """The supervisor or pool behind a child (its ready value or bound ``run``).

    Recognised by the class attribute ``supervises = True``, so that an actor
    with a ``status`` method of its own is not mistaken for a subtree.
    """
    for candidate in (value, getattr(start, "__self__", None)):
        if getattr(candidate, "supervises", False) is True:
            return candidate
    return None


def ask_to_stop(value: object) -> bool:
    """Call ``value.request_stop()`` if it has one; True if the request was taken."""
    request_stop = getattr(value, "request_stop", None)
    return bool(callable(request_stop) and request_stop())


async def stop_within_deadline(
    *,
    value: object,
    scope: trio.CancelScope,
    done: trio.Event,
    deadline: float,
    what: str,
    kind: str,
) -> bool:
    """Ask a child to stop, wait ``deadline`` s, then cancel it. True if it overran."""
    if not (deadline > 0 and ask_to_stop(value)):
        scope.cancel()
    overran = False
    if deadline > 0:
        with trio.move_on_after(deadline):
            await done.wait()
        if not done.is_set():
            overran = True
            log.warning(
                "%s did not stop within its %gs shutdown deadline; cancelling", what, deadline
            )
            SHUTDOWN_OVERRUNS.labels(kind=kind).inc()
    scope.cancel()
    await done.wait()
    return overran


@dataclass(slots=True, eq=False)
class _Child:
    spec: ChildSpec
    state: ActorState = ActorState.STOPPED
    restarts: int = 0
    overruns: int = 0
    last_error: dict[str, str] | None = None
    started_at: float | None = None
    value: object = None
    alive: bool = False
    stopping: bool = False
    incarnation: int = 0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


_Exit = tuple[_Child, int, Exception | None]


# ---------------------------------------------------------------------- supervisor


class Supervisor:
    """A static supervisor: a fixed, ordered list of children.

    Start it like any actor: ``sup = await nursery.start(supervisor.run)``, or put
    it under another supervisor with ``ChildSpec.of(supervisor)``. ``rng`` is the
    random source of the backoff jitter (uniform in [0, 1)); tests inject one.
    """

    kind = "supervisor"
    supervises = True

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        flags: SupervisorFlags | None = None,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.specs = tuple(children)
        self.flags = flags if flags is not None else SupervisorFlags()
        self._rng = rng
        self._children = [_Child(spec) for spec in self.specs]
        self._state = ActorState.STOPPED
        self._running = False
        self._last_error: dict[str, str] | None = None
        self._started_at: float | None = None
        self._window = RestartWindow(1.0)  # replaced by the validated period in run()
        self._loop_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._exits_send: trio.MemorySendChannel[_Exit] | None = None

    def __repr__(self) -> str:
        return f"<Supervisor {self.name} {self.flags.strategy} {self._state}>"

    @property
    def state(self) -> ActorState:
        """The supervisor's own state."""
        return self._state

    def _validate(self) -> None:
        where = f"supervisor {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSpec(
                "supervisor", "name", f"must be a non-empty string (got {self.name!r})"
            )
        self.flags = validate_flags(self.flags, where)
        specs = [validate_spec(spec) for spec in self.specs]
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise InvalidSpec(where, "children", f"has two children named {spec.name!r}")
            seen.add(spec.name)
        self.specs = tuple(specs)

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Validate, start the children in order, report ready, supervise until stopped.

        Returns normally after `request_stop` (children stopped in reverse order).
        Raises `ChildStartError` if a child fails before its first ready report,
        `SupervisorEscalation` if the restart intensity is exceeded, and lets
        cancellation through after stopping the children in order.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._validate()
        self._running = True
        self._state = ActorState.STARTING
        self._last_error = None
        self._children = [_Child(spec) for spec in self.specs]
        self._window = RestartWindow(self.flags.period)
        exits_send, exits_receive = trio.open_memory_channel[_Exit](math.inf)
        self._exits_send = exits_send
        failure: SupervisorError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with trio.CancelScope() as self._loop_scope:
                        failure = await self._start_initial()
                        if failure is None:
                            self._state = ActorState.RUNNING
                            self._started_at = trio.current_time()
                            task_status.started(self)
                            failure = await self._supervise(exits_receive)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
        finally:
            self._running = False
            self._loop_scope = None
            self._nursery = None
            self._started_at = None
            self._state = ActorState.FAILED if failure is not None else ActorState.STOPPED
        if failure is not None:
            self._last_error = error_info(failure)
            if isinstance(failure, SupervisorEscalation):
                SUPERVISOR_ESCALATIONS.labels(supervisor=self.name).inc()
                log.error("%s", failure)
                raise failure from failure.last_error
            if isinstance(failure, ChildStartError):
                raise failure from failure.error
            raise failure

    def request_stop(self) -> bool:
        """Stop supervising: children are stopped in reverse order, `run` returns.

        Returns False (and does nothing) if the supervisor is not running.
        """
        if self._loop_scope is None:
            return False
        self._loop_scope.cancel()
        return True

    # -- starting ------------------------------------------------------------------

    async def _start_initial(self) -> SupervisorError | None:
        for child in self._children:
            error = await self._start_child(child)
            if error is not None:
                child.state = ActorState.FAILED
                return ChildStartError(self.name, child.spec.name, error)
        return None

    async def _start_child(self, child: _Child, *, restart: bool = False) -> Exception | None:
        """Start one child and wait until it is ready; its pre-ready error, if any."""
        assert self._nursery is not None
        if restart:
            child.restarts += 1
            ACTOR_RESTARTS.labels(kind=child.spec.kind).inc()
        child.incarnation += 1
        child.scope = trio.CancelScope()
        child.done = trio.Event()
        child.stopping = False
        child.state = ActorState.STARTING
        try:
            await self._nursery.start(self._child_task, child, child.incarnation)
        except Exception as exc:
            child.last_error = error_info(exc)
            log.warning(
                "supervisor %r: child %r failed to start: %r", self.name, child.spec.name, exc
            )
            return exc
        return None

    async def _child_task(
        self, child: _Child, incarnation: int, *, task_status: trio.TaskStatus[object]
    ) -> None:
        def on_ready(value: object) -> None:
            child.value = value
            child.state = ActorState.RUNNING
            child.started_at = trio.current_time()

        reporter = ReadyReporter(task_status, on_ready, child.scope, self._nursery)
        error: Exception | None = None
        child.alive = True
        try:
            with child.scope:
                try:
                    await child.spec.start(*child.spec.args, task_status=reporter)
                except Exception as exc:
                    if not reporter.reported:
                        raise
                    error = exc
            if not reporter.reported and not child.scope.cancelled_caught:
                raise RuntimeError("returned before reporting ready (task_status.started())")
        finally:
            child.alive = False
            child.started_at = None
            if child.state is not ActorState.STARTING:
                child.state = ActorState.STOPPED
            child.done.set()
        if error is not None:
            child.last_error = error_info(error)
            child.state = ActorState.FAILED
        if child.stopping or not reporter.reported:
            return
        assert self._exits_send is not None
        self._exits_send.send_nowait((child, incarnation, error))

    # -- supervising ---------------------------------------------------------------

    async def _supervise(self, exits: trio.MemoryReceiveChannel[_Exit]) -> SupervisorError | None:
        async for child, incarnation, error in exits:
            if incarnation != child.incarnation or child.stopping:
                continue  # an exit already dealt with by a group restart
            if error is not None:
                log.warning(
                    "supervisor %r: child %r crashed: %r", self.name, child.spec.name, error
                )
            if not should_restart(child.spec.restart, error):
                child.state = ActorState.FAILED if error is not None else ActorState.STOPPED
                continue
            failure = await self._restart_from(child, error)
            if failure is not None:
                return failure
        return None  # pragma: no cover - the channel is never closed

    def _group(self, child: _Child) -> list[_Child]:
        strategy = self.flags.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        return self._children[self._children.index(child) :]

    async def _restart_from(
        self, failed: _Child, error: Exception | None
    ) -> SupervisorError | None:
        """Apply the strategy for ``failed``; retried while a restart fails to start."""
        while True:
            failed.state = ActorState.RESTARTING
            recent = self._window.record(trio.current_time())
            if recent > self.flags.intensity:
                failed.state = ActorState.FAILED
                return SupervisorEscalation(
                    self.name, failed.spec.name, error, self.flags.intensity, self.flags.period
                )
            group = self._group(failed)
            for child in reversed(group):
                if child is not failed and child.alive:
                    await self._stop_child(child)
            to_start: list[_Child] = []
            for child in group:
                if child is failed or child.spec.restart is not Restart.TEMPORARY:
                    child.state = ActorState.RESTARTING
                    to_start.append(child)
            await trio.sleep(backoff_delay(self.flags, recent - 1, self._rng()))
            for child in to_start:
                start_error = await self._start_child(child, restart=True)
                if start_error is not None:
                    failed, error = child, start_error
                    break
            else:
                return None

    # -- stopping ------------------------------------------------------------------

    async def _stop_child(self, child: _Child) -> None:
        if child.alive:
            child.stopping = True
            overran = await stop_within_deadline(
                value=child.value,
                scope=child.scope,
                done=child.done,
                deadline=child.spec.shutdown,
                what=f"supervisor {self.name!r}: child {child.spec.name!r}",
                kind=child.spec.kind,
            )
            if overran:
                child.overruns += 1
        child.state = ActorState.STOPPED

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            if child.alive:
                await self._stop_child(child)
            elif child.state in (ActorState.STARTING, ActorState.RESTARTING, ActorState.RUNNING):
                child.state = ActorState.STOPPED

    # -- status --------------------------------------------------------------------

    def status(self) -> StatusNode:
        """This supervisor's subtree (see `engine.status` for the format)."""
        now = now_or_none()
        uptime = None
        if self._started_at is not None and now is not None:
            uptime = now - self._started_at
        flags = self.flags
        return {
            "type": "supervisor",
            "name": self.name,
            "kind": self.kind,
            "state": self._state.value,
            "restart": None,
            "restarts": 0,
            "last_error": self._last_error,
            "uptime": uptime,
            "inbox": None,
            "overruns": 0,
            "strategy": str(flags.strategy),
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
            "children": [self._child_status(child, now) for child in self._children],
        }

    def _child_status(self, child: _Child, now: float | None) -> StatusNode:
        spec = child.spec
        uptime = None
        if child.started_at is not None and now is not None:
            uptime = now - child.started_at
        own: StatusNode = {
            "name": spec.name,
            "kind": spec.kind,
            "state": child.state.value,
            "restart": str(spec.restart),
            "restarts": child.restarts,
            "last_error": child.last_error,
            "uptime": uptime,
            "overruns": child.overruns,
        }
        nested = nested_tree(child.value, spec.start)
        if nested is not None:
            node: StatusNode = nested.status()
            node.update(own)
            return node
        return {"type": "actor", **own, "inbox": inbox_of(child.value)}
