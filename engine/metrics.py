"""Prometheus metrics of the actor runtime.

Counters are ordinary module-level metrics in the default registry. Gauges that
describe live actors (how many per kind, how deep their inboxes are) are computed
when Prometheus scrapes, from the actor registries that exist at that moment, so
that starting and stopping thousands of connections costs nothing here.

Importing this module twice (``importlib.reload``, or under two names) does not
raise ``Duplicated timeseries``: every metric is looked up in the default registry
before it is created.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from sinal.engine.actor import ActorRef

__all__ = [
    "ACTOR_RESTARTS",
    "INBOX_REFUSED",
    "POOL_REFUSED",
    "SHUTDOWN_OVERRUNS",
    "SUPERVISOR_ESCALATIONS",
    "LIVE_ACTORS_COLLECTOR",
    "LiveActorSource",
]


class LiveActorSource(Protocol):
    """What the scrape-time collector needs from an actor registry."""

    def live_refs_by_kind(self) -> dict[str, list[ActorRef[object]]]: ...


def _existing(name: str) -> object | None:
    # prometheus_client keeps no public lookup by name; this private dict has been
    # stable for years and is only read here.
    return REGISTRY._names_to_collectors.get(name)


def _counter(name: str, documentation: str, labels: Iterable[str]) -> Counter:
    found = _existing(name + "_total") or _existing(name)
    if isinstance(found, Counter):
        return found
    return Counter(name, documentation, list(labels))


class _LiveActorsCollector:
    """Scrape-time gauges over every registered `LiveActorSource`."""

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[LiveActorSource] = weakref.WeakSet()

    def track(self, source: LiveActorSource) -> None:
        self._sources.add(source)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("sinal_actors_live", "Live actors by kind", labels=["kind"])
        yield GaugeMetricFamily(
            "sinal_inbox_depth",
            "Messages waiting in inboxes, summed by actor kind",
            labels=["kind"],
        )
        yield GaugeMetricFamily(
            "sinal_inbox_depth_max", "Deepest inbox among actors of a kind", labels=["kind"]
        )

    def collect(self) -> Iterator[Metric]:
        live = GaugeMetricFamily("sinal_actors_live", "Live actors by kind", labels=["kind"])
        depth = GaugeMetricFamily(
            "sinal_inbox_depth",
            "Messages waiting in inboxes, summed by actor kind",
            labels=["kind"],
        )
        deepest = GaugeMetricFamily(
            "sinal_inbox_depth_max", "Deepest inbox among actors of a kind", labels=["kind"]
        )
        totals: dict[str, list[int]] = {}
        for source in list(self._sources):
            for kind, refs in source.live_refs_by_kind().items():
                entry = totals.setdefault(kind, [0, 0, 0])
                for ref in refs:
                    d = ref.depth
                    entry[0] += 1
                    entry[1] += d
                    entry[2] = max(entry[2], d)
        for kind in sorted(totals):
            count, total, most = totals[kind]
            live.add_metric([kind], count)
            depth.add_metric([kind], total)
            deepest.add_metric([kind], most)
        yield live
        yield depth
        yield deepest


def _live_collector() -> _LiveActorsCollector:
    found = _existing("sinal_actors_live")
    if found is not None and hasattr(found, "track"):
        return found  # type: ignore[return-value]
    collector = _LiveActorsCollector()
    REGISTRY.register(collector)
    return collector


ACTOR_RESTARTS = _counter(
    "sinal_actor_restarts", "Children restarted by a supervisor, by child kind", ["kind"]
)
INBOX_REFUSED = _counter(
    "sinal_inbox_refused", "Messages refused by try_send because the inbox was full", ["kind"]
)
SUPERVISOR_ESCALATIONS = _counter(
    "sinal_supervisor_escalations",
    "Supervisors that exceeded their restart intensity and failed to their parent",
    ["supervisor"],
)
POOL_REFUSED = _counter(
    "sinal_pool_refused", "Children refused by a dynamic pool at its maximum", ["pool"]
)
SHUTDOWN_OVERRUNS = _counter(
    "sinal_shutdown_overruns",
    "Children that did not stop within their shutdown deadline and were cancelled",
    ["kind"],
)
LIVE_ACTORS_COLLECTOR = _live_collector()
