"""Rate budgets (RATE_LIMIT_REQUESTS_PER_MINUTE): a token bucket per key. `RateLimiter`
keeps the buckets of one process; `SharedRateLimiter` keeps them in Redis for the whole
cluster (every node and worker), and falls back to local buckets while Redis is away."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any


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



# --- the cluster's budgets, in Redis --------------------------------------------------------

# One atomic round trip per charge: refill by Redis's own clock (no skew between nodes),
# take `cost` tokens when there are enough, remember the bucket, let an idle one expire.
TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(bucket[1]) or capacity
local stamp = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


class SharedRateLimiter(RateLimiter):
    """The same token bucket, kept in Redis: every connection of a key, on every node and
    worker, draws on one budget (`<prefix>rate:<key>`), charged atomically by one Lua
    script. The interface is RateLimiter's (synchronous): a charge is one round trip on a
    connection with a short timeout. When Redis fails, the limiter falls back to its local
    buckets (this process's share only) and says so (`degraded`); it asks Redis again
    `retry_every` seconds later and rejoins by itself when Redis answers."""

    def __init__(self, per_minute: int, client: Any, *, prefix: str = "sinal:",
                 clock: Callable[[], float] = time.monotonic, retry_every: float = 1.0) -> None:
        super().__init__(per_minute, clock)
        self.client = client
        self.prefix = prefix
        self.retry_every = retry_every
        self.script = client.register_script(TOKEN_BUCKET_LUA)
        self.degraded = False
        self.failures = 0
        self._down_until = float("-inf")
        self._remaining: dict[str, float] = {}

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self.clock()
        if now >= self._down_until:
            try:
                allowed, tokens = self.script(keys=[f"{self.prefix}rate:{key}"],
                                              args=[self.capacity, self.rate, cost])
            except Exception:  # Redis away or slow: local budgets until it answers
                self.failures += 1
                self.degraded = True
                self._down_until = now + self.retry_every
            else:
                self.degraded = False
                self._remaining[key] = float(tokens)
                if len(self._remaining) > 100_000:
                    self._remaining.clear()
                return bool(int(allowed))
        return super().allow(key, cost)

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        if self.degraded or key not in self._remaining:
            return super().retry_after(key, cost)
        return max(0.0, (cost - self._remaining[key]) / self.rate)


# --- who the client is, behind proxies -------------------------------------------------------

def trusted_networks(setting: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """TRUSTED_PROXIES: comma-separated addresses or networks (validated by the config)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False)
                 for item in setting.split(",") if item.strip())


def _is_trusted(address: str,
                networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None,
                   networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The address budgets key on. The peer, unless the peer is a trusted proxy: then the
    X-Forwarded-For list is read from the right (each proxy appends the address it saw),
    skipping trusted proxies, and the first address that is not one is the client. A
    client cannot forge its way past: what it wrote itself sits left of what a trusted
    proxy appended, and a malformed entry stops the walk at the proxy before it."""
    if not forwarded_for or not _is_trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop.strip("[]"))
        except ValueError:
            return client
        client = hop.strip("[]")
        if not _is_trusted(client, networks):
            return client
    return client
