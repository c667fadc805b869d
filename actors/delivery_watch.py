"""DeliveryWatch actor: orders past their expected delivery date become `late`.

Every `interval` seconds one UPDATE (api.workflow.mark_late_deliveries) flips pending or
in-transit orders whose expected_delivery_date has passed. The change is captured like
any other, so the `delivery_late` notification (buyers and the requester) and the
purchase_order_changed update follow by themselves. Every node may run it: the UPDATE only
touches orders not yet late, so running it twice changes nothing.
"""

from __future__ import annotations

import logging

import trio

from sinal.domain.db import Database
from sinal.domain.workflow import mark_late_deliveries

log = logging.getLogger("sinal.delivery_watch")


class DeliveryWatch:
    kind = "delivery_watch"

    def __init__(self, db: Database, interval: float = 60.0) -> None:
        self.db = db
        self.interval = interval
        self.marked = 0

    async def check_once(self) -> int:
        count = await self.db.run(mark_late_deliveries)
        if count:
            log.info("%d purchase orders are now late", count)
        self.marked += count
        return count

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            await self.check_once()
            await trio.sleep(self.interval)
