"""Timers for actors: a heartbeat (act every X).

`Heartbeat` runs a callback on a fixed schedule in its own task; a beat that
overruns skips the ticks it missed instead of firing them in a burst. Its user
is `engine.periodic.PeriodicActor`, the base class of actors that act on a
schedule.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

__all__ = ["Heartbeat"]


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
