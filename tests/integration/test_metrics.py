"""Prometheus metrics, scraped and parsed with the official client's own parser: the
families an operator graphs exist and move as the server works, and they are served
on their own listener only, never on the client port."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from homeserver.api.context import HOMESERVER
from homeserver.api.metrics import build_metrics_app
from tests.conftest import PostgresServer
from tests.integration.conftest import RoomUser
from tests.integration.test_process import START_BUDGET_FIRST, Server, clean_env, free_port

Client = TestClient[Any, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(metrics: Client) -> Samples:
    resp = await metrics.get("/metrics")
    assert resp.status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a sample's series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@pytest.fixture
async def metrics_client() -> Any:
    client: Client = TestClient(TestServer(build_metrics_app(), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def test_families_exist_and_move(
    homeserver_client: Callable[..., Any], metrics_client: Client
) -> None:
    client: Client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = await RoomUser.make(client, "alice")
    await alice.get("/v3/account/whoami")  # labelled families show once a series exists
    before = await scrape(metrics_client)
    for family in (
        "homeserver_http_requests_total",
        "homeserver_http_request_duration_seconds_bucket",
        "homeserver_db_query_duration_seconds_count",
        "homeserver_db_checkout_wait_seconds_count",
        "homeserver_db_pool_connections",
        "homeserver_events_persisted_total",
        "homeserver_long_polls_held",
        "homeserver_delivery_targets",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "python_gc_collections_total",
    ):
        assert any(name == family for name, _ in before), family

    room_id = await alice.create_room()
    send = "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"
    sync = asyncio.create_task(
        alice.get("/v3/sync", timeout="10000", since=(await alice.get("/v3/sync"))[1]["next_batch"])
    )
    during = before
    for _ in range(100):
        during = await scrape(metrics_client)
        if total(during, "homeserver_long_polls_held") >= 1:
            break
        await asyncio.sleep(0.05)
    assert total(during, "homeserver_long_polls_held") >= 1
    await alice.say(room_id, "hello")
    await sync
    after = await scrape(metrics_client)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("homeserver_http_requests_total", route=send, method="PUT", status="200") == 1
    assert moved("homeserver_http_request_duration_seconds_count", route=send) == 1
    assert moved("homeserver_events_persisted_total") >= 2  # the room's events, the message
    assert moved("homeserver_db_query_duration_seconds_count") > 0
    assert moved("homeserver_db_checkout_wait_seconds_count") > 0
    # No room id or user id ever becomes a label value.
    assert not any(room_id in str(labels) for _, labels in after)

    hs = client.server.app[HOMESERVER]
    await hs.remote_sender.send_edu("127.0.0.1:9", "m.typing", {"room_id": room_id})
    for _ in range(100):
        after = await scrape(metrics_client)
        if total(after, "homeserver_federation_send_failures_total", destination="127.0.0.1:9"):
            break
        await asyncio.sleep(0.1)
    assert total(after, "homeserver_federation_backoff_seconds", destination="127.0.0.1:9") > 0

    # The client port does not serve them.
    resp = await client.get("/metrics")
    assert resp.status == 404


def test_metrics_listener_of_a_running_server(tmp_path: Path, postgres: PostgresServer) -> None:
    port, metrics_port = free_port(), free_port()
    env = clean_env(HOMESERVER_DATABASE_URL=postgres.create_database())
    server = Server(tmp_path / "data", port, "--metrics-port", str(metrics_port), env=env)
    try:
        server.wait_ready(START_BUDGET_FIRST)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"homeserver_http_requests", "process_cpu_seconds"} <= names
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert refused.value.code == 404
    finally:
        assert server.stop() == 0
