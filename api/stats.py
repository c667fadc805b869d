"""The node's own request statistics, its health payload and its Prometheus exposition.

`RequestStats` keeps per-second buckets for the last five minutes (memory is constant):
requests per minute, mean latency, and the REST cache hit rate -- the share of list
reads answered `304 Not Modified`. They feed GET /api/metrics/realtime, /health/realtime
and the metrics service. Health and alerts judge the hit rate only over at least
`MIN_READS_FOR_HIT_RATE` reads (a node that just served a few first fetches is not sick).

`HttpMetrics` is a per-app Prometheus registry: request counts and latency histograms by
route, scrape-time counters of the request statistics and of the response cache (hits,
misses, entries, bytes), and the realtime side's collectors (connections, topics, frames
fanned out, listener lag), which the realtime view supplies (api/realtime.py). Actor
restarts and the other runtime counters live in the default registry (engine/metrics.py);
GET /metrics serves both.
"""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sinal.api.freshness import CommitFence
    from sinal.api.realtime import RealtimeView
    from sinal.api.response_cache import ResponseCache

WINDOW_SECONDS = 300
MIN_READS_FOR_HIT_RATE = 20


@dataclass(slots=True)
class _Bucket:
    second: int
    requests: int = 0
    latency_ms: float = 0.0
    reads: int = 0
    hits: int = 0


class RequestStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 window: int = WINDOW_SECONDS) -> None:
        self.clock = clock
        self.window = window
        self._buckets: deque[_Bucket] = deque()
        self.requests_total = 0
        self.reads_total = 0
        self.hits_total = 0

    def record(self, latency_s: float, *, read: bool = False, hit: bool = False) -> None:
        second = int(self.clock())
        if not self._buckets or self._buckets[-1].second != second:
            self._buckets.append(_Bucket(second))
            self._trim(second)
        bucket = self._buckets[-1]
        bucket.requests += 1
        bucket.latency_ms += latency_s * 1000
        self.requests_total += 1
        if read:
            bucket.reads += 1
            self.reads_total += 1
            if hit:
                bucket.hits += 1
                self.hits_total += 1

    def _trim(self, now: int) -> None:
        while self._buckets and self._buckets[0].second <= now - self.window:
            self._buckets.popleft()

    def _recent(self, seconds: int) -> Iterator[_Bucket]:
        now = int(self.clock())
        return (b for b in self._buckets if b.second > now - seconds)

    def requests_per_minute(self) -> int:
        return sum(b.requests for b in self._recent(60))

    def average_latency_ms(self) -> float:
        buckets = list(self._recent(self.window))
        count = sum(b.requests for b in buckets)
        return round(sum(b.latency_ms for b in buckets) / count, 2) if count else 0.0

    def reads(self) -> tuple[int, int]:
        buckets = list(self._recent(self.window))
        return sum(b.reads for b in buckets), sum(b.hits for b in buckets)

    def cache_hit_rate(self) -> float:
        """304s over list reads in the window; 1.0 when there were none (nothing missed)."""
        reads, hits = self.reads()
        return round(hits / reads, 4) if reads else 1.0

    def hit_rate_judged(self) -> bool:
        return self.reads()[0] >= MIN_READS_FOR_HIT_RATE

    def snapshot(self) -> dict[str, Any]:
        return {"requestsPerMinute": self.requests_per_minute(),
                "cacheHitRate": self.cache_hit_rate(),
                "averageLatency": self.average_latency_ms()}


def peak_memory_mb() -> float:
    """The peak resident set size (getrusage)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def resident_memory_mb() -> float:
    """Current resident set size (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def health_report(realtime: RealtimeView, stats: RequestStats, max_connections: int
                  ) -> dict[str, Any]:
    """Seed 8.2's health payload (GET /health/realtime), from memory only (a health check
    never queries).

    cacheHitRate (REST 304s over list reads) and averageLatency (ms) cover the last five
    minutes of requests; the hit rate is judged only over at least MIN_READS_FOR_HIT_RATE
    reads. Healthy: the node serves, holds fewer than MAX_CONCURRENT_CONNECTIONS sockets,
    its judged hit rate is over 0.7 and its mean latency under 500 ms."""
    connections = realtime.active_connections()
    metrics: dict[str, Any] = {
        "websocketConnections": connections,
        "websocketPending": realtime.pending_connections(),
        "cacheHitRate": stats.cache_hit_rate(),
        "averageLatency": stats.average_latency_ms(),
        "uptime": round(realtime.uptime(), 3),
        "memoryUsage": {"maxRssMb": peak_memory_mb(), "rssMb": resident_memory_mb()},
        "listener": realtime.listener_status(),
        "cluster": realtime.cluster_state(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    metrics["healthy"] = (
        realtime.ready()
        and connections < max_connections
        and (metrics["cacheHitRate"] > 0.7 or not stats.hit_rate_judged())
        and metrics["averageLatency"] < 500
    )
    return metrics


class _StatsCollector(Collector):
    """Scrape-time counters of the node's request statistics."""

    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("sinal_http_cache_hits",
                                   "List reads answered 304 Not Modified")
        hits.add_metric([], self.stats.hits_total)
        yield hits
        reads = CounterMetricFamily("sinal_http_list_reads", "List reads (200 or 304)")
        reads.add_metric([], self.stats.reads_total)
        yield reads


class _ResponseCacheCollector(Collector):
    def __init__(self, cache: ResponseCache, fence: CommitFence | None) -> None:
        self.cache = cache
        self.fence = fence

    def collect(self) -> Iterator[Metric]:
        cache, fence = self.cache, self.fence
        for name, text, value in (
                ("sinal_http_response_cache_hits", "List reads answered from the response "
                 "cache (no query, no encoding)", cache.hits),
                ("sinal_http_response_cache_misses", "List reads that had to query",
                 cache.misses),
                ("sinal_http_response_cache_evictions", "Entries dropped for size or age",
                 cache.evictions),
                ("sinal_http_commit_fences", "Sequencer calls that proved a cached body "
                 "current (shared by concurrent requests)", fence.rounds if fence else 0)):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], value)
            yield counter
        entries = GaugeMetricFamily("sinal_http_response_cache_entries", "Cached answers")
        entries.add_metric([], len(cache))
        yield entries
        size = GaugeMetricFamily("sinal_http_response_cache_bytes",
                                 "Bytes held by the response cache (bound: CACHE_MAX_SIZE_MB)")
        size.add_metric([], cache.bytes)
        yield size


class HttpMetrics:
    def __init__(self, stats: RequestStats, collectors: Iterable[Collector] = (),
                 responses: ResponseCache | None = None,
                 fence: CommitFence | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("sinal_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "sinal_http_request_duration_seconds", "HTTP request latency by route", ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        for collector in (*collectors, _StatsCollector(stats)):
            self.registry.register(collector)
        if responses is not None:
            self.registry.register(_ResponseCacheCollector(responses, fence))
        # label lookups cost more than the increments: keep the children (routes and
        # statuses are few -- unmatched paths all count as "(unmatched)")
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = self.requests.labels(
                method, route, str(status))
        counter.inc()
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self.registry)
