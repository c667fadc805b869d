"""HeartbeatScheduler actor: heartbeats out and silence checks for every connection of a
node, from one task and one heap of deadlines -- not a timer task per socket.

Each registered connection has two entries in the heap: its next heartbeat (every
WEBSOCKET_HEARTBEAT_INTERVAL from its connect, exactly) and its silence deadline
(`last_seen + WEBSOCKET_CONNECTION_TIMEOUT`). Receiving a frame only writes
`conn.last_seen` (no heap operation); when a silence entry comes due the scheduler looks
at `last_seen` again and either pushes the real deadline or tells the connection it timed
out. The task sleeps until the earliest entry, so an idle node with 10,000 sockets wakes
once per due heartbeat batch, and the heartbeat frame is encoded once per encoding per
wake-up and offered to every connection due. A third kind of entry is the session's end:
the moment its token expires (`expire_at`), when the connection is told to close.
"""

from __future__ import annotations

import heapq
import itertools
import time
import weakref
from typing import Protocol

import trio

from sinal.protocol import Encoding, Heartbeat, encode
from sinal.websocket.frames import build_frame

_BEAT = 0
_SILENCE = 1
_EXPIRY = 2


class Beating(Protocol):
    """What the scheduler needs of a connection."""

    encoding: Encoding
    last_seen: float
    beating: bool

    def offer(self, frame: bytes) -> bool: ...

    def timed_out(self) -> None: ...

    def expired(self) -> None: ...


class HeartbeatScheduler:
    kind = "heartbeat_scheduler"
    name = "heartbeats"

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        # Entries hold weak references: a closed connection is freed at once, whatever
        # its entries' due times; `remove` compacts the heap once most entries are stale.
        self._heap: list[tuple[float, int, int, weakref.ref[Beating]]] = []
        self._order = itertools.count()
        self._removed = 0
        self._changed = trio.Event()
        self.beats = 0
        self.timeouts = 0
        self.wakeups = 0

    def __len__(self) -> int:
        return len(self._heap)

    def _push(self, due: float, what: int, conn: Beating) -> None:
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (due, next(self._order), what, weakref.ref(conn)))
        if earliest is None or due < earliest:
            self._changed.set()

    def add(self, conn: Beating) -> None:
        """Start beating for `conn` (from now) and watching its silence."""
        now = trio.current_time()
        conn.beating = True
        self._push(now + self.interval, _BEAT, conn)
        self._push(conn.last_seen + self.timeout, _SILENCE, conn)

    def expire_at(self, conn: Beating, deadline: float) -> None:
        """Tell `conn` at `deadline` (Trio time) that its session is over."""
        self._push(deadline, _EXPIRY, conn)

    def remove(self, conn: Beating) -> None:
        """Stop: its entries are dropped when they come due, or when the heap is compacted
        (once there have been about as many removals as live entries)."""
        conn.beating = False
        self._removed += 1
        if self._removed * 3 >= len(self._heap):
            self._heap = [entry for entry in self._heap
                          if (alive := entry[3]()) is not None and alive.beating]
            heapq.heapify(self._heap)
            self._removed = 0

    def run_due(self, now: float) -> None:
        """Serve every entry due at `now` (synchronous)."""
        frames: dict[Encoding, bytes] = {}
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, what, ref = heapq.heappop(heap)
            conn = ref()
            if conn is None or not conn.beating:
                continue
            if what == _BEAT:
                frame = frames.get(conn.encoding)
                if frame is None:
                    payload = encode(Heartbeat(timestamp=int(time.time() * 1000)),
                                     conn.encoding)
                    frame = frames[conn.encoding] = build_frame(
                        payload, text=not conn.encoding.binary)
                conn.offer(frame)
                self.beats += 1
                heapq.heappush(heap, (due + self.interval, next(self._order), _BEAT, ref))
            elif what == _EXPIRY:
                conn.beating = False
                conn.expired()
            else:
                deadline = conn.last_seen + self.timeout
                if deadline > now:
                    heapq.heappush(heap, (deadline, next(self._order), _SILENCE, ref))
                else:
                    conn.beating = False
                    self.timeouts += 1
                    conn.timed_out()

    async def run(self, *, task_status: trio.TaskStatus[HeartbeatScheduler]
                  = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self)
        while True:
            self._changed = trio.Event()
            if self._heap:
                with trio.move_on_at(self._heap[0][0]):
                    await self._changed.wait()
            else:
                await self._changed.wait()
            self.wakeups += 1
            self.run_due(trio.current_time())
