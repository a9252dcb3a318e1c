"""Prometheus metrics: what an operator graphs to see whether the server is healthy.

Defined once here, in the process-wide registry of the official client (which also
carries the process's CPU, memory, file descriptors and garbage collection), and
updated by every layer; this module imports nothing of the server, so any layer may use
it. Figures read at scrape time (the pools, the delivery queues) come from sources that
register themselves with `sample`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# A sample read at scrape time: (family, its help, label names, label values, value).
Sample = tuple[str, str, tuple[str, ...], tuple[str, ...], float]

HTTP_REQUESTS = Counter(
    "homeserver_http_requests",
    "HTTP requests answered, by route pattern, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "homeserver_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DB_QUERY = Histogram(
    "homeserver_db_query_duration_seconds",
    "Time of one SQL statement, from sending it to its result",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DB_CHECKOUT = Histogram(
    "homeserver_db_checkout_wait_seconds",
    "Time waited for a pooled connection",
    buckets=(0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
)
EVENTS_PERSISTED = Counter("homeserver_events_persisted", "Room events written to the database")
LONG_POLLS = Gauge("homeserver_long_polls_held", "Requests waiting for news (/sync, /events)")
FEDERATION_FAILURES = Counter(
    "homeserver_federation_send_failures",
    "Transactions a destination failed to take (it was unreachable or answered an error)",
    ["destination"],
)
FEDERATION_BACKOFF = Gauge(
    "homeserver_federation_backoff_seconds",
    "How long we wait before trying a failing destination again (0: not failing)",
    ["destination"],
)


class Source(Protocol):
    def metric_samples(self) -> Iterable[Sample]: ...


class _Sampled(Collector):
    """Gauges read from live objects (pools, delivery queues) when Prometheus scrapes."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[Source] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in list(self.sources):
            for name, doc, labels, values, value in source.metric_samples():
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
                family.add_metric(list(values), value)
        yield from families.values()


_SAMPLED = _Sampled()
REGISTRY.register(_SAMPLED)


def sample(source: Source) -> None:
    """Read `source.metric_samples()` at every scrape, for as long as it lives."""
    _SAMPLED.sources.add(source)
