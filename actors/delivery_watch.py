"""DeliveryWatch actor: orders past their expected delivery date become `late`.

At start and every `interval` seconds one UPDATE (domain/workflow.mark_late_deliveries)
flips pending or in-transit orders whose expected_delivery_date has passed. The change is
captured like any other, so the `delivery_late` notification (buyers and the requester)
and the purchase_order_changed update follow by themselves. Every node may run it: the UPDATE only
touches orders not yet late, so running it twice changes nothing.
"""

from __future__ import annotations

import logging

from sinal.domain.db import Database
from sinal.domain.workflow import mark_late_deliveries
from sinal.engine.periodic import PeriodicActor
from sinal.engine.registry import Registry

log = logging.getLogger("sinal.delivery_watch")


class DeliveryWatch(PeriodicActor):
    kind = "delivery_watch"

    def __init__(self, db: Database, interval: float = 60.0, *,
                 registry: Registry | None = None) -> None:
        super().__init__("delivery_watch", interval, first_after=0, registry=registry)
        self.db = db
        self.marked = 0

    async def check_once(self) -> int:
        count = await self.db.run(mark_late_deliveries)
        if count:
            log.info("%d purchase orders are now late", count)
        self.marked += count
        return count

    async def tick(self) -> None:
        await self.check_once()
