"""MetricsPublisher actor: `metrics {performance, status}` frames to subscribed admins.

Every `interval` seconds it gathers the node's numbers, encodes the frame once per wire
encoding and offers the same bytes to every admin connection subscribed to `metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sinal.actors.hub import Hub
from sinal.engine.periodic import PeriodicActor
from sinal.protocol import Metrics


class MetricsPublisher(PeriodicActor):
    kind = "metrics_publisher"

    def __init__(self, hub: Hub, gather: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
                 interval: float = 5.0) -> None:
        super().__init__("metrics_publisher", interval, registry=hub.registry)
        self.hub = hub
        self.gather = gather
        self.published = 0

    def publish_once(self) -> int:
        if not self.hub.metrics_sinks:
            return 0
        performance, status = self.gather()
        sent = self.hub.offer_all(Metrics(performance=performance, status=status),
                                  list(self.hub.metrics_sinks))
        self.published += 1
        return sent

    async def tick(self) -> None:
        self.publish_once()
