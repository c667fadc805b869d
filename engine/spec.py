"""Supervision specs: strategies, restart types, child specs, flags and their checks.

The plain data a `engine.supervisor.Supervisor` or a `engine.dynamic.DynamicSupervisor`
is built from, and nothing that runs:

* `Strategy` (which children restart together) and `Restart` (whether a child
  that ended is restarted, `should_restart`);
* `ChildSpec` (how to start, restart and stop one child) and `SupervisorFlags`
  (strategy, restart intensity, backoff);
* `validate_spec` / `validate_flags`, which supervisors call when they start and
  which raise `InvalidSpec` naming the bad field;
* `backoff_delay` (exponential, capped, with jitter) and `RestartWindow` (the
  sliding window the restart intensity is counted in);
* the errors supervisors and pools raise, all `SupervisorError`.

Semantics follow Erlang/OTP's ``supervisor`` (see docs/actors.md).
"""

from __future__ import annotations

import enum
import inspect
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

__all__ = [
    "ChildSpec",
    "ChildStartError",
    "InvalidSpec",
    "Restart",
    "RestartWindow",
    "StartFn",
    "Strategy",
    "SupervisorError",
    "SupervisorEscalation",
    "SupervisorFlags",
    "backoff_delay",
    "should_restart",
    "validate_flags",
    "validate_spec",
]

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

        Works for `engine.actor.Actor`, `engine.supervisor.Supervisor` and the
        dynamic pool. The default shutdown is 5 s, or infinite for supervisors and
        pools (their own children's deadlines bound them).
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
