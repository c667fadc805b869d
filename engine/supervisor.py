"""Supervisors in the OTP mould, on Trio: child specs, restart strategies, intensity.

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

Semantics follow Erlang/OTP's ``supervisor`` (see docs/actors.md); the design
notes at the top of each method say where Trio changes the picture.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import trio

from sinal.engine.metrics import ACTOR_RESTARTS, SHUTDOWN_OVERRUNS, SUPERVISOR_ESCALATIONS
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

StartFn = Callable[..., Awaitable[object]]
"""An async callable taking ``task_status`` as a keyword (Trio's start convention)."""


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one of them must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that ended."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped (reverse order), then all start again."""
    REST_FOR_ONE = "rest_for_one"
    """The child that ended and every child started after it."""


class Restart(enum.StrEnum):
    """When a child that ended is restarted."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only if it ended with an exception (abnormally)."""
    TEMPORARY = "temporary"
    """Never; not even when a sibling's restart stops it."""


def should_restart(restart: Restart, error: BaseException | None) -> bool:
    """Whether a child of this restart type that ended with ``error`` is restarted."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return error is not None
    return False


# --------------------------------------------------------------------------- errors


class SupervisorError(Exception):
    """Base class of the errors raised by supervisors and pools."""


class InvalidSpec(SupervisorError, ValueError):
    """A child spec or supervisor flags field is invalid (raised when starting)."""

    def __init__(self, where: str, field_name: str, problem: str) -> None:
        super().__init__(f"{where}: field {field_name!r} {problem}")
        self.where = where
        self.field = field_name


class ChildStartError(SupervisorError):
    """A child failed before reporting ready, while its supervisor was starting."""

    def __init__(self, supervisor: str, child: str, error: BaseException) -> None:
        super().__init__(
            f"supervisor {supervisor!r} could not start child {child!r}: "
            f"{type(error).__name__}: {error}"
        )
        self.supervisor = supervisor
        self.child = child
        self.error = error


class SupervisorEscalation(SupervisorError):
    """A supervisor exceeded its restart intensity, stopped its children and gave up.

    ``last_error`` is the failure that tipped it over (None if the child exited
    normally); it is also the exception's ``__cause__``.
    """

    def __init__(
        self,
        supervisor: str,
        child: str,
        last_error: BaseException | None,
        intensity: int,
        period: float,
    ) -> None:
        why = "exited" if last_error is None else f"{type(last_error).__name__}: {last_error}"
        super().__init__(
            f"supervisor {supervisor!r} gave up after more than {intensity} restarts in "
            f"{period:g}s; last: child {child!r} {why}"
        )
        self.supervisor = supervisor
        self.child = child
        self.last_error = last_error


# ----------------------------------------------------------------------- spec data


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child. Validated when the supervisor starts.

    ``start(*args, task_status=...)`` must call ``task_status.started(value)`` once
    ready; ``value`` is what status shows (an ActorRef's inbox, a nested
    supervisor's tree) and what receives ``request_stop()`` at shutdown.
    ``shutdown`` is the seconds allowed between the stop request and the child's
    end before it is cancelled: 0 cancels at once, ``math.inf`` waits forever
    (the usual choice for a nested supervisor).
    """

    name: str
    start: StartFn
    kind: str = "worker"
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    args: tuple[Any, ...] = ()

    @classmethod
    def of(
        cls,
        child: Any,
        *,
        restart: Restart = Restart.PERMANENT,
        shutdown: float | None = None,
        name: str | None = None,
    ) -> ChildSpec:
        """Spec for an object with ``name``, ``kind`` and ``run(task_status=...)``.

        Works for `engine.actor.Actor`, `Supervisor` and the dynamic pool. The
        default shutdown is 5 s, or infinite for supervisors and pools (their own
        children's deadlines bound them).
        """
        kind = str(getattr(child, "kind", "worker"))
        if shutdown is None:
            shutdown = math.inf if kind in ("supervisor", "pool") else 5.0
        return cls(
            name=name if name is not None else child.name,
            start=child.run,
            kind=kind,
            restart=restart,
            shutdown=shutdown,
        )


@dataclass(frozen=True, slots=True)
class SupervisorFlags:
    """Strategy, restart intensity and backoff of a supervisor.

    More than ``intensity`` restarts within ``period`` seconds (a sliding window)
    and the supervisor gives up. Before the k-th restart in the window (k from 0)
    it waits ``backoff_delay``: ``min(backoff_cap, backoff_base * 2**k)`` shortened
    by up to ``backoff_jitter`` of itself at random.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 3
    period: float = 5.0
    backoff_base: float = 0.1
    backoff_cap: float = 10.0
    backoff_jitter: float = 0.5


def backoff_delay(flags: SupervisorFlags, k: int, u: float) -> float:
    """Seconds to wait before a restart, with k earlier restarts in the window.

    ``delay = min(cap, base * 2**k) * (1 - jitter * u)`` where ``u`` is uniform
    in [0, 1) (the supervisor's random source). Without jitter the delays are
    base, 2 base, 4 base, ... up to cap; with jitter each lies in
    ``((1 - jitter) * d, d]``.
    """
    capped = min(flags.backoff_cap, flags.backoff_base * 2.0 ** min(max(k, 0), 64))
    return capped * (1.0 - flags.backoff_jitter * u)


_E = TypeVar("_E", bound=enum.Enum)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _coerce_enum(enum_type: type[_E], value: object, where: str, name: str) -> _E:
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum_type)
        raise InvalidSpec(where, name, f"must be one of {choices} (got {value!r})") from None


def _accepts_task_status(start: object) -> bool:
    try:
        signature = inspect.signature(start)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True  # cannot tell; find out when it runs
    parameters = signature.parameters.values()
    return any(
        p.name == "task_status" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def validate_spec(spec: object) -> ChildSpec:
    """Check one child spec; returns it with enum fields normalised."""
    if not isinstance(spec, ChildSpec):
        raise InvalidSpec("child spec", "type", f"must be a ChildSpec (got {spec!r})")
    if not isinstance(spec.name, str) or not spec.name:
        raise InvalidSpec("child spec", "name", f"must be a non-empty string (got {spec.name!r})")
    where = f"child spec {spec.name!r}"
    start = spec.start
    if not callable(start):
        raise InvalidSpec(where, "start", f"must be an async callable (got {start!r})")
    if (inspect.isfunction(start) or inspect.ismethod(start)) and not (
        inspect.iscoroutinefunction(start)
    ):
        raise InvalidSpec(where, "start", f"must be an async function (got {start!r})")
    if not _accepts_task_status(start):
        raise InvalidSpec(where, "start", "must accept a task_status keyword argument")
    if not isinstance(spec.kind, str) or not spec.kind:
        raise InvalidSpec(where, "kind", f"must be a non-empty string (got {spec.kind!r})")
    restart = _coerce_enum(Restart, spec.restart, where, "restart")
    if not _is_real(spec.shutdown) or spec.shutdown < 0:
        raise InvalidSpec(
            where,
            "shutdown",
            f"must be a number of seconds >= 0 or math.inf (got {spec.shutdown!r})",
        )
    if not isinstance(spec.args, tuple):
        raise InvalidSpec(where, "args", f"must be a tuple (got {spec.args!r})")
    return replace(spec, restart=restart)


def validate_flags(flags: object, where: str) -> SupervisorFlags:
    """Check supervisor flags; returns them with the strategy normalised."""
    if not isinstance(flags, SupervisorFlags):
        raise InvalidSpec(where, "flags", f"must be SupervisorFlags (got {flags!r})")
    strategy = _coerce_enum(Strategy, flags.strategy, where, "strategy")
    if isinstance(flags.intensity, bool) or not isinstance(flags.intensity, int):
        raise InvalidSpec(where, "intensity", f"must be an int >= 0 (got {flags.intensity!r})")
    if flags.intensity < 0:
        raise InvalidSpec(where, "intensity", f"must be an int >= 0 (got {flags.intensity!r})")
    for name in ("period", "backoff_base", "backoff_cap"):
        value = getattr(flags, name)
        positive = name == "period"
        if not _is_real(value) or math.isinf(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise InvalidSpec(
                where, name, f"must be a finite number of seconds {bound} (got {value!r})"
            )
    if flags.backoff_cap < flags.backoff_base:
        raise InvalidSpec(
            where,
            "backoff_cap",
            f"must be >= backoff_base ({flags.backoff_cap!r} < {flags.backoff_base!r})",
        )
    if not _is_real(flags.backoff_jitter) or not 0 <= flags.backoff_jitter <= 1:
        raise InvalidSpec(
            where, "backoff_jitter", f"must be between 0 and 1 (got {flags.backoff_jitter!r})"
        )
    return replace(flags, strategy=strategy)


class RestartWindow:
    """Restart times within the last ``period`` seconds (the intensity window)."""

    __slots__ = ("period", "_times")

    def __init__(self, period: float) -> None:
        self.period = period
        self._times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Add a restart at ``now``; returns how many are in the window, it included."""
        self._times.append(now)
        return self.recent(now)

    def recent(self, now: float) -> int:
        """How many restarts happened in ``(now - period, now]``."""
        times = self._times
        while times and now - times[0] >= self.period:
            times.popleft()
        return len(times)


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
        self._window = RestartWindow(self.flags.period if _is_real(self.flags.period) else 1.0)
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
