"""GarbageCollector actor: this process's full garbage collections, on a timer.

CPython starts a full collection whenever the objects that survived into the oldest
generation have grown by a quarter since the last one, and a full collection looks at
every object in the process. A node holding tens of thousands of sockets has about 70
tracked objects per socket, so while connections arrive (a connect storm, a restart of a
neighbour) full collections follow one another, each longer than the last: measured here,
12 of them during 10,000 connects, the longest 0.9 s, 5.7 s of CPU in all, during which no
frame went out (a notification storm's p99 went from 6 ms to 0.9 s).

With SINAL_GC_FULL_INTERVAL > 0 (the default, 600 s) this actor takes that decision
over: it turns the automatic full collections off (the oldest generation's threshold);
young collections stay as CPython runs them (they free the cycles a closed connection
leaves). Every interval it runs one full collection and records how long it took
(`last_pause`, shown in the status tree and /metrics).

Under `sinal serve` (`freeze`) it also freezes what survives each collection
(`gc.freeze`: moved out of every later collection), so the next one looks only at what was
made since: a node holding 10,000 idle sockets pauses about 0.8 s for a collection that
looks at everything, a few milliseconds for one that looks at an interval's new objects.
What is frozen and later becomes cyclic garbage waits for the deep collection, every
`DEEP_EVERY` intervals (hourly by default), which unfreezes everything first. A closed
connection is freed by reference counting (measured: 300 sockets opened, frozen, closed:
every connection actor gone, nothing left for the deep collection), so that wait costs
little. 0 leaves CPython's policy alone.

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
DEEP_EVERY = 6  # every 6th collection looks at frozen objects too
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
        self.freeze = freeze  # freeze survivors (a real process; not in tests)
        self.collections = 0
        self.deep_collections = 0
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
        deep = self.freeze and (self.collections + 1) % DEEP_EVERY == 0
        if deep:
            gc.unfreeze()
        self.collected += gc.collect()
        if self.freeze:
            gc.freeze()
        self.last_pause = time.perf_counter() - started
        self.longest_pause = max(self.longest_pause, self.last_pause)
        self.collections += 1
        self.deep_collections += deep

    def describe(self) -> dict[str, Any]:
        return {"fullCollections": self.collections, "deepCollections": self.deep_collections,
                "collected": self.collected,
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
