"""Actors: a Trio task that owns a bounded inbox, and the reference others send to.

An actor is started like any Trio service, ``ref = await nursery.start(actor.run)``,
usually by a supervisor (see `engine.supervisor`). ``run`` reports ready with the
actor's `ActorRef`, which is what other actors hold:

* ``await ref.send(msg)`` waits while the inbox is full (back-pressure);
* ``ref.try_send(msg)`` never waits and returns False when the inbox is full
  (the refusal is counted on the reference and in Prometheus).

The inbox belongs to the actor object, not to one run of its task: when a
supervisor restarts the actor it calls ``run`` again on the same object, the
reference stays valid and messages queued meanwhile are handled by the new run.
Reset any per-run state in `Actor.on_start`.

Stopping: a supervisor first asks politely with `ActorRef.request_stop` (the
default message loop ends between two messages), and cancels the task only if it
has not ended within its shutdown deadline.

The inbox is a `Mailbox`: a bounded FIFO that costs a few hundred bytes while nobody
waits on it (a node has one actor per connection, tens of thousands of them); the
parking lots for waiting senders and the waiting receiver are made when first needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

import trio

from sinal.engine.metrics import INBOX_REFUSED
from sinal.engine.registry import Registry, default_registry

__all__ = ["DEFAULT_INBOX_CAPACITY", "Actor", "ActorRef", "Mailbox"]

DEFAULT_INBOX_CAPACITY = 64
"""Inbox bound used when an actor does not choose one."""

MsgT = TypeVar("MsgT")


def _check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"inbox capacity must be an int, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"inbox capacity must be a positive bound, got {capacity!r}")
    return capacity


class Mailbox(Generic[MsgT]):
    """A bounded FIFO for one receiving task: `put` waits while full, `put_nowait` says
    False, `get` waits while empty, `get_nowait` raises `trio.WouldBlock`."""

    __slots__ = ("capacity", "_items", "_receivers", "_senders")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: list[MsgT] = []
        self._receivers: trio.lowlevel.ParkingLot | None = None
        self._senders: trio.lowlevel.ParkingLot | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, message: MsgT) -> bool:
        if len(self._items) >= self.capacity:
            return False
        self._items.append(message)
        if self._receivers:
            self._receivers.unpark_all()
        return True

    async def put(self, message: MsgT) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while len(self._items) >= self.capacity:
            if self._senders is None:
                self._senders = trio.lowlevel.ParkingLot()
            await self._senders.park()
            parked = True
        self.put_nowait(message)
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def get_nowait(self) -> MsgT:
        if not self._items:
            raise trio.WouldBlock
        message = self._items.pop(0)  # bounded and short: cheaper than a deque's block
        if self._senders:
            # one slot, one sender woken, first come first served (waking them all would
            # cost O(waiting senders) per message: thousands of connections subscribing at
            # once). A woken sender appends before anything else can run in its task; if
            # another took the slot meanwhile, it parks again, and the next get wakes one.
            self._senders.unpark(count=1)
        return message

    async def get(self) -> MsgT:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._items:
            if self._receivers is None:
                self._receivers = trio.lowlevel.ParkingLot()
            await self._receivers.park()
            parked = True
        message = self.get_nowait()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return message


class ActorRef(Generic[MsgT]):
    """The sending end of an actor's inbox, plus its name and kind."""

    __slots__ = ("name", "kind", "refused", "_box", "_stop_hook", "_refused_metric")

    def __init__(self, name: str, kind: str, box: Mailbox[MsgT]) -> None:
        self.name = name
        self.kind = kind
        self.refused = 0
        """How many `try_send` calls found the inbox full."""
        self._box = box
        self._stop_hook: Callable[[], None] | None = None
        self._refused_metric = INBOX_REFUSED.labels(kind=kind)

    def __repr__(self) -> str:
        return f"<ActorRef {self.kind}:{self.name} inbox {self.depth}/{self.capacity}>"

    async def send(self, message: MsgT) -> None:
        """Put ``message`` in the inbox, waiting while it is full."""
        await self._box.put(message)

    def try_send(self, message: MsgT) -> bool:
        """Put ``message`` in the inbox if there is room; False (and counted) if full."""
        if self._box.put_nowait(message):
            return True
        self.refused += 1
        self._refused_metric.inc()
        return False

    @property
    def depth(self) -> int:
        """Messages waiting in the inbox."""
        return len(self._box)

    @property
    def capacity(self) -> int:
        """The inbox bound."""
        return self._box.capacity

    def request_stop(self) -> bool:
        """Ask the running actor to finish after the message it is handling.

        Returns False if nobody listens (the actor is not running): a supervisor
        then cancels it.
        """
        if self._stop_hook is None:
            return False
        self._stop_hook()
        return True

    def inbox_status(self) -> dict[str, int]:
        """``{"depth", "capacity", "refused"}`` for status snapshots."""
        return {"depth": len(self._box), "capacity": self._box.capacity,
                "refused": self.refused}


class _Messages(Generic[MsgT]):
    """Async iterator over an actor's inbox that ends when a stop is requested."""

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor[MsgT]) -> None:
        self._actor = actor

    def __aiter__(self) -> _Messages[MsgT]:
        return self

    async def __anext__(self) -> MsgT:
        actor = self._actor
        if actor.stop_requested:
            raise StopAsyncIteration
        with trio.CancelScope() as waiting:
            actor._waiting = waiting
            try:
                message = await actor._inbox.get()
            finally:
                actor._waiting = None
        if waiting.cancelled_caught:
            raise StopAsyncIteration
        return message


class Actor(Generic[MsgT]):
    """Base class for an actor with a bounded inbox and a message loop.

    Subclasses set ``kind`` and implement `handle` (or override `main` for a loop
    of their own that iterates `messages`). A singleton passes ``unique_name=True``
    (the default) and is found with ``registry.lookup(name)``; a dynamic child such
    as a connection passes ``unique_name=False`` and is only counted by kind.
    """

    kind: ClassVar[str] = "actor"
    __slots__ = ("_inbox", "_running", "_stop_requested", "_waiting", "name", "ref",
                 "registry", "unique_name")

    def __init__(
        self,
        name: str,
        *,
        capacity: int = DEFAULT_INBOX_CAPACITY,
        registry: Registry | None = None,
        unique_name: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"actor name must be a non-empty string, got {name!r}")
        self._inbox: Mailbox[MsgT] = Mailbox(_check_capacity(capacity))
        self.name = name
        self.registry = registry if registry is not None else default_registry
        self.unique_name = unique_name
        self.ref: ActorRef[MsgT] = ActorRef(name, self.kind, self._inbox)
        self._running = False
        self._stop_requested = False
        self._waiting: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}:{self.name}>"

    @property
    def running(self) -> bool:
        """True while a run of this actor's task is in progress."""
        return self._running

    @property
    def stop_requested(self) -> bool:
        """True once `stop` or `ActorRef.request_stop` was called during this run."""
        return self._stop_requested

    async def run(
        self, *, task_status: trio.TaskStatus[ActorRef[MsgT]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The actor's task: register, `on_start`, report ready with the ref, `main`."""
        if self._running:
            raise RuntimeError(f"{self!r} is already running")
        self.registry.add(self.ref, unique_name=self.unique_name)  # may raise NameTaken
        self._running = True
        self._stop_requested = False
        self.ref._stop_hook = self.stop
        try:
            await self.on_start()
            task_status.started(self.ref)
            await self.main()
        finally:
            self.ref._stop_hook = None
            self.registry.remove(self.ref)
            self._running = False

    async def on_start(self) -> None:
        """Set up before reporting ready (open connections, reset per-run state)."""

    async def main(self) -> None:
        """The actor's body; by default, `handle` every message until stopped."""
        async for message in self.messages():
            await self.handle(message)
            del message  # hold nothing of the last message while waiting for the next

    async def handle(self, message: MsgT) -> None:
        """Process one message from the inbox."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle() or main()")

    def message_nowait(self) -> MsgT | None:
        """The next message if one is waiting, else None (never waits). For an actor that
        handles its inbox only when something arrives, in a task of its own making."""
        try:
            return self._inbox.get_nowait()
        except trio.WouldBlock:
            return None

    def messages(self) -> _Messages[MsgT]:
        """Iterate over the inbox until a stop is requested."""
        return _Messages(self)

    def stop(self) -> None:
        """End the message loop after the current message (a normal exit)."""
        self._stop_requested = True
        if self._waiting is not None:
            self._waiting.cancel()
