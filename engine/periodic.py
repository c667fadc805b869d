"""Periodic actors: act on a schedule, and at once when asked.

A `PeriodicActor` calls its `PeriodicActor.tick` every ``interval`` seconds (an
`engine.timers.Heartbeat`, so an overrunning tick skips the ticks it missed
instead of bunching them) and whenever a `RunNow` arrives in its inbox. Ticks
never overlap: a request that arrives during a scheduled tick runs after it.

::

    class Sweeper(PeriodicActor):
        kind = "sweeper"

        async def tick(self) -> None:
            ...  # one sweep

    sweeper = Sweeper("sweeper", 3600.0)
    ChildSpec.of(sweeper)       # under a supervisor
    await sweeper.run_now()     # from a caller that wants a sweep now

An exception from `tick` crashes the actor with that exception (not wrapped in
an exception group); its supervisor restarts it with backoff, and since the
inbox belongs to the actor object, requests still queued are served by the new
run. A stop request (`engine.actor.ActorRef.request_stop`) lets a tick in
progress finish, then ends the actor normally.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from sinal.engine.actor import Actor
from sinal.engine.registry import Registry
from sinal.engine.timers import Heartbeat

__all__ = ["PeriodicActor", "RunNow"]


@dataclass(frozen=True, slots=True, eq=False)
class RunNow:
    """Ask a periodic actor to act at once; `done` is set when that run has finished."""

    done: trio.Event = field(default_factory=trio.Event)


class PeriodicActor(Actor[RunNow]):
    """`tick()` every `interval` seconds (first after `first_after`, default one interval) and
    whenever a RunNow arrives; ticks never overlap. An exception from tick() crashes the
    actor (its supervisor restarts it with backoff)."""

    kind = "periodic"

    def __init__(
        self,
        name: str,
        interval: float,
        *,
        first_after: float | None = None,
        registry: Registry | None = None,
        capacity: int = 8,
    ) -> None:
        super().__init__(name, capacity=capacity, registry=registry)
        # Built here so that a bad interval or first_after raises ValueError at once.
        self._heartbeat = Heartbeat(interval, self._scheduled_tick, first_after=first_after)
        self.interval = self._heartbeat.interval
        """Seconds between scheduled ticks."""
        self.ticks = 0
        """Ticks completed (scheduled or requested, across restarts)."""
        self._lock = trio.Lock()
        self._crash: Exception | None = None
        self._scope: trio.CancelScope | None = None

    async def tick(self) -> None:
        """Act once. Subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement tick()")

    async def main(self) -> None:
        """Run the heartbeat beside the inbox loop until stopped or a tick fails."""
        self._lock = trio.Lock()
        self._crash = None
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            await nursery.start(self._heartbeat.run)
            async for request in self.messages():
                try:
                    ok = await self._tick()
                finally:
                    request.done.set()
                if not ok:
                    break
            # Stopping: let a scheduled tick in progress finish, then end the schedule.
            async with self._lock:
                nursery.cancel_scope.cancel()
        self._scope = None
        if self._crash is not None:
            crash, self._crash = self._crash, None
            raise crash

    async def run_now(self) -> None:
        """Send a `RunNow` through ``self.ref`` and wait until that tick has finished.

        Waits while the inbox is full. Returns also when that tick failed (the
        actor then crashes; compare `ticks`). If the actor stops before serving
        the request, it is served by the actor's next run.
        """
        request = RunNow()
        await self.ref.send(request)
        await request.done.wait()

    async def _scheduled_tick(self) -> None:
        await self._tick()

    async def _tick(self) -> bool:
        """One tick under the lock; on failure record it, end the run, return False."""
        async with self._lock:
            if self._crash is not None:
                return False
            try:
                await self.tick()
            except Exception as exc:
                self._crash = exc
                if self._scope is not None:
                    self._scope.cancel()
                return False
            self.ticks += 1
            return True
