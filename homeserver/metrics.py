"""Prometheus metrics: what an operator graphs to see whether the server is healthy.

Defined once here and updated by every layer; this module imports nothing of the
server, so any layer may use it. Until `enable` (when the operator configures the
metrics listener) each metric is a stand-in that does nothing: the official client
(about 1.5 MiB of modules, with the HTTP and WSGI servers it brings) is imported only
for a server that exports metrics. Enabled, they live in the client's process-wide
registry (which also carries the process's CPU, memory, file descriptors and garbage
collection). Figures read at scrape time (the pools, the delivery queues) come from
sources that register themselves with `sample`, enabled or not.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.core import GaugeMetricFamily

# A sample read at scrape time: (family, its help, label names, label values, value).
Sample = tuple[str, str, tuple[str, ...], tuple[str, ...], float]


class _Off:
    """Every metric before `enable`: each update a call that does nothing."""

    def labels(self, *values: str) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def track_inprogress(self) -> AbstractContextManager[None]:
        return _NOTHING  # stateless: one for every held long-poll


_NOTHING: AbstractContextManager[None] = nullcontext()


_OFF: Any = _Off()
HTTP_REQUESTS = cast("Counter", _OFF)
HTTP_DURATION = cast("Histogram", _OFF)
DB_QUERY = cast("Histogram", _OFF)
DB_CHECKOUT = cast("Histogram", _OFF)
EVENTS_PERSISTED = cast("Counter", _OFF)
LONG_POLLS = cast("Gauge", _OFF)
FEDERATION_FAILURES = cast("Counter", _OFF)
FEDERATION_BACKOFF = cast("Gauge", _OFF)
SLIDING_SYNC_LISTS = cast("Counter", _OFF)


class Source(Protocol):
    def metric_samples(self) -> Iterable[Sample]: ...


_SOURCES: weakref.WeakSet[Source] = weakref.WeakSet()


def sample(source: Source) -> None:
    """Read `source.metric_samples()` at every scrape, for as long as it lives."""
    _SOURCES.add(source)


def _sampled() -> Iterator[GaugeMetricFamily]:
    """Gauges read from live objects (pools, delivery queues) when Prometheus scrapes."""
    from prometheus_client.core import GaugeMetricFamily

    families: dict[str, GaugeMetricFamily] = {}
    for source in list(_SOURCES):
        for name, doc, labels, values, value in source.metric_samples():
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
            family.add_metric(list(values), value)
    yield from families.values()


def enable() -> None:
    """Create the real metrics in the client's registry (once; later calls do nothing)."""
    global HTTP_REQUESTS, HTTP_DURATION, DB_QUERY, DB_CHECKOUT, EVENTS_PERSISTED
    global LONG_POLLS, FEDERATION_FAILURES, FEDERATION_BACKOFF, SLIDING_SYNC_LISTS
    if HTTP_REQUESTS is not _OFF:
        return
    from prometheus_client import REGISTRY, Counter, Gauge, Histogram
    from prometheus_client.registry import Collector

    class _Sampled(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            return _sampled()

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
    SLIDING_SYNC_LISTS = Counter(
        "homeserver_sliding_sync_lists",
        "Sliding sync lists answered, by how: read whole, or brought up to date from"
        " the connection's window",
        ["read"],
    )
    REGISTRY.register(_Sampled())
