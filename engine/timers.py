"""Timers for actors: a heartbeat (act every X) and an idle timeout (give up after Y).

`Heartbeat` runs a callback on a fixed schedule in its own task; a beat that
overruns skips the ticks it missed instead of firing them in a burst.

`IdleTimeout` cancels a block after ``timeout`` seconds without activity. Marking
activity with `IdleTimeout.touch` is cheap enough to call per message: it reads
the clock and only moves the cancel scope's deadline when the deadline has come
within ``slack`` of ``now + timeout`` (at most once per ``slack`` seconds of
traffic). No task is woken per message. The price: the block is cancelled
between ``timeout`` and ``timeout + slack`` seconds after the last touch.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NoReturn

import trio

__all__ = ["Heartbeat", "IdleTimeout", "IdleTimeoutError"]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


class Heartbeat:
    """Await ``beat()`` every ``interval`` seconds, on a schedule that does not drift.

    The first beat comes ``first_after`` seconds after start (default: one
    interval). Run it in the actor's nursery: ``await nursery.start(hb.run)``.
    """

    __slots__ = ("interval", "first_after", "beats", "skipped", "_beat")

    def __init__(
        self,
        interval: float,
        beat: Callable[[], Awaitable[object]],
        *,
        first_after: float | None = None,
    ) -> None:
        self.interval = _positive("interval", interval)
        self.first_after = self.interval if first_after is None else float(first_after)
        if not 0 <= self.first_after < math.inf:
            raise ValueError(f"first_after must be >= 0 seconds, got {first_after!r}")
        self._beat = beat
        self.beats = 0
        """Beats done so far."""
        self.skipped = 0
        """Ticks skipped because a beat overran past them."""

    async def run(
        self, *, task_status: trio.TaskStatus[Heartbeat] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        next_at = trio.current_time() + self.first_after
        task_status.started(self)
        while True:
            await trio.sleep_until(next_at)
            await self._beat()
            self.beats += 1
            next_at += self.interval
            now = trio.current_time()
            if next_at <= now:
                missed = math.floor((now - next_at) / self.interval) + 1
                self.skipped += missed
                next_at += missed * self.interval


class IdleTimeoutError(Exception):
    """Raised by an `IdleTimeout` with ``raise_on_expiry=True`` when it expires."""


class IdleTimeout:
    """Context manager: cancel the block after ``timeout`` seconds without `touch`.

    ::

        with IdleTimeout(60) as idle:
            async for frame in stream:
                idle.touch()
                ...
        if idle.expired:
            ...  # close with the documented "idle" code

    ``slack`` defaults to an eighth of ``timeout``. With ``raise_on_expiry`` the
    block ends with `IdleTimeoutError` instead of silently.
    """

    __slots__ = ("timeout", "slack", "raise_on_expiry", "_scope", "_last")

    def __init__(
        self, timeout: float, *, slack: float | None = None, raise_on_expiry: bool = False
    ) -> None:
        self.timeout = _positive("timeout", timeout)
        self.slack = self.timeout / 8 if slack is None else _positive("slack", slack)
        self.raise_on_expiry = raise_on_expiry
        self._scope: trio.CancelScope | None = None
        self._last = 0.0

    def __enter__(self) -> IdleTimeout:
        now = trio.current_time()
        self._last = now
        self._scope = trio.CancelScope(deadline=now + self.timeout + self.slack)
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._scope is not None
        swallowed = self._scope.__exit__(exc_type, exc, tb)
        if swallowed and self.raise_on_expiry and self._scope.cancelled_caught:
            raise IdleTimeoutError(f"no activity for {self.timeout:g}s")
        return swallowed

    def touch(self) -> None:
        """Record activity now."""
        now = trio.current_time()
        self._last = now
        scope = self._scope
        if scope is not None and now + self.timeout > scope.deadline:
            scope.deadline = now + self.timeout + self.slack

    @property
    def idle_for(self) -> float:
        """Seconds since the last activity (or since entering)."""
        return trio.current_time() - self._last

    @property
    def expired(self) -> bool:
        """True if the block was cancelled for idleness."""
        return self._scope is not None and self._scope.cancelled_caught
