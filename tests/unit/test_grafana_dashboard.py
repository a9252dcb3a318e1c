"""The Grafana dashboard in contrib/ graphs metrics the server really exports: a renamed
metric would otherwise leave an empty panel nobody notices."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY

from homeserver.metrics import Sample, enable, sample

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "homeserver.json"
_NAME = re.compile(r"\b((?:homeserver|process|python)_[a-z_]+)")
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


class _Queue:
    def metric_samples(self) -> Iterator[Sample]:
        yield "homeserver_delivery_targets", "doc", ("queue", "state"), ("q", "draining"), 0
        yield "homeserver_db_pool_connections", "doc", ("state",), ("size",), 0


def test_every_panel_reads_an_exported_metric() -> None:
    enable()  # the server's metrics in the registry, as a server with a metrics listener has
    source = _Queue()
    sample(source)  # the families read at scrape time, as a pool and a queue provide them
    exported = {metric.name for metric in REGISTRY.collect()}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert panels
    for panel in panels:
        for target in panel["targets"]:
            for name in _NAME.findall(target["expr"]):
                base = name
                for suffix in _SUFFIXES:
                    base = base.removesuffix(suffix)
                assert base in exported, (panel["title"], name)
