"""Registry of live actors: singletons by name, everything counted by kind.

A singleton (the database listener, a topic) registers under a unique name, and
any part of the node finds it with `Registry.lookup`. A dynamic child such as a
WebSocket connection registers without a global name: it is only counted (and its
inbox measured) under its kind. Actors add themselves when their task starts and
remove themselves when it ends, so the registry holds exactly the running actors.

Most code uses the process-wide `default_registry`; tests build their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sinal.engine.metrics import LIVE_ACTORS_COLLECTOR

if TYPE_CHECKING:
    from sinal.engine.actor import ActorRef

__all__ = ["ActorNotFound", "NameTaken", "Registry", "default_registry"]


class NameTaken(ValueError):
    """Another live actor already holds this name."""

    def __init__(self, name: str, holder: ActorRef[Any]) -> None:
        super().__init__(
            f"actor name {name!r} is already registered by a live actor of kind {holder.kind!r}"
        )
        self.name = name


class ActorNotFound(LookupError):
    """No live actor is registered under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no live actor is registered under the name {name!r}")
        self.name = name


class Registry:
    """Live actors of one node (or of one test)."""

    __slots__ = ("_named", "_by_kind", "__weakref__")

    def __init__(self) -> None:
        self._named: dict[str, ActorRef[Any]] = {}
        self._by_kind: dict[str, set[ActorRef[Any]]] = {}
        LIVE_ACTORS_COLLECTOR.track(self)

    def add(self, ref: ActorRef[Any], *, unique_name: bool) -> None:
        """Record a starting actor; with ``unique_name`` also make it findable by name.

        Raises `NameTaken` if another live actor holds the name. Adding the same
        reference again (a restarted actor) is harmless.
        """
        if unique_name:
            holder = self._named.get(ref.name)
            if holder is not None and holder is not ref:
                raise NameTaken(ref.name, holder)
            self._named[ref.name] = ref
        self._by_kind.setdefault(ref.kind, set()).add(ref)

    def remove(self, ref: ActorRef[Any]) -> None:
        """Forget a stopped actor (no error if it was not there)."""
        if self._named.get(ref.name) is ref:
            del self._named[ref.name]
        refs = self._by_kind.get(ref.kind)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self._by_kind[ref.kind]

    def lookup(self, name: str) -> ActorRef[Any] | None:
        """The live singleton registered as ``name``, or None."""
        return self._named.get(name)

    def require(self, name: str) -> ActorRef[Any]:
        """The live singleton registered as ``name``; `ActorNotFound` if none."""
        ref = self.lookup(name)
        if ref is None:
            raise ActorNotFound(name)
        return ref

    def names(self) -> list[str]:
        """Names of the live singletons, sorted."""
        return sorted(self._named)

    def count(self, kind: str) -> int:
        """How many actors of ``kind`` are live (named or not)."""
        return len(self._by_kind.get(kind, ()))

    def counts(self) -> dict[str, int]:
        """Live actors per kind."""
        return {kind: len(refs) for kind, refs in sorted(self._by_kind.items())}

    def total(self) -> int:
        """Live actors of every kind."""
        return sum(len(refs) for refs in self._by_kind.values())

    def live_refs_by_kind(self) -> dict[str, list[ActorRef[Any]]]:
        """A copy of the live references grouped by kind (for metrics)."""
        return {kind: list(refs) for kind, refs in self._by_kind.items()}


default_registry = Registry()
"""The registry actors use when none is given."""
