"""GarbageCollector actor: this process's full garbage collections, on a timer.

CPython starts a full collection whenever the objects that survived into the oldest
generation have grown by a quarter since the last one, and a full collection looks at
every object in the process. A node holding tens of thousands of sockets has about 70
tracked objects per socket, so while connections arrive (a connect storm, a restart of a
neighbour) full collections follow one another, each longer than the last: measured here,
12 of them during 10,000 connects, the longest 0.9 s, 5.7 s of CPU in all, during which no
frame went out (a notification storm's p99 went from 6 ms to 0.9 s).

With SINAL_GC_FULL_INTERVAL > 0 (the default, 600 s) this actor takes that decision
over: at start it collects once and freezes what exists (the code, the settings, the
tree: `gc.freeze`, never looked at again), and turns the automatic full collections off
(the oldest generation's threshold); young collections stay as CPython runs them (they
free the cycles a closed connection leaves). Every interval it runs one full collection
and records how long it took (`last_pause`, shown in the status tree): garbage cycles that
reached the oldest generation wait at most that long. 0 leaves CPython's policy alone.

The policy is the process's: with several nodes in one process (tests) the first one to
start takes it and the last one to stop gives it back.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from sinal.engine.periodic import PeriodicActor
from sinal.engine.registry import Registry

COLLECTOR_NAME = "garbage_collector"
NO_AUTOMATIC_FULL = 1_000_000_000  # the oldest generation's threshold: in effect, never

_holders = 0
_saved: tuple[int, int, int] | None = None


def _take_over() -> None:
    global _holders, _saved
    if _holders == 0:
        _saved = gc.get_threshold()
        young, middle, _ = _saved
        gc.set_threshold(young, middle, NO_AUTOMATIC_FULL)
    _holders += 1


def _give_back() -> None:
    global _holders, _saved
    _holders -= 1
    if _holders == 0 and _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None


class GarbageCollector(PeriodicActor):
    kind = "garbage_collector"

    def __init__(self, interval: float, *, freeze: bool = False,
                 registry: Registry | None = None) -> None:
        super().__init__(COLLECTOR_NAME, interval, registry=registry)
        self.freeze = freeze  # freeze what exists at start (a real process; not in tests)
        self.collections = 0
        self.collected = 0
        self.last_pause = 0.0  # seconds the last full collection took
        self.longest_pause = 0.0
        self._holding = False

    async def on_start(self) -> None:
        if not self._holding:
            _take_over()
            self._holding = True
            if self.freeze:
                gc.collect()
                gc.freeze()

    async def tick(self) -> None:
        started = time.perf_counter()
        self.collected += gc.collect()
        self.last_pause = time.perf_counter() - started
        self.longest_pause = max(self.longest_pause, self.last_pause)
        self.collections += 1

    def describe(self) -> dict[str, Any]:
        return {"fullCollections": self.collections, "collected": self.collected,
                "lastPauseMs": round(self.last_pause * 1000, 1),
                "longestPauseMs": round(self.longest_pause * 1000, 1),
                "frozen": gc.get_freeze_count()}

    async def main(self) -> None:
        try:
            await super().main()
        finally:
            if self._holding:
                self._holding = False
                _give_back()
