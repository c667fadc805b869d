"""Rate budgets (RATE_LIMIT_REQUESTS_PER_MINUTE): a token bucket per key, shared by the
WebSocket frames and the REST requests of one node."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Token bucket per key: `per_minute` tokens, refilled continuously.

    `clock` is injectable (trio.current_time in actors, so tests run in virtual time).
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self.clock()
        tokens, stamp = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            return True
        self._buckets[key] = (tokens, now)
        return False

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        tokens, _ = self._buckets.get(key, (self.capacity, 0.0))
        return max(0.0, (cost - tokens) / self.rate)

    def forget_idle(self) -> None:
        """Drop full buckets (keeps memory bounded by active users)."""
        now = self.clock()
        for key, (tokens, stamp) in list(self._buckets.items()):
            if tokens + (now - stamp) * self.rate >= self.capacity:
                del self._buckets[key]

