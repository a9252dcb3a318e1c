"""Remote media fetched once in a cluster: two processes on one database (and one media
directory) asked at once for the same remote media ask its origin once; the other
waits and serves the stored copy. A fetch that fails lets the waiting process fetch."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from homeserver.api.context import HOMESERVER
from homeserver.app import build_app
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core.pool import Database
from tests.integration.conftest import auth_header, make_config, make_user
from tests.integration.peers import PEER_CONFIG
from tests.integration.test_federation_media import FakeOrigin, multipart, png

Client = TestClient[Any, Any]
V1 = "/_matrix/client/v1/media"
# How long the origin takes to answer: both processes are waiting meanwhile.
SLOW_S = 0.5


@pytest.fixture
async def fake_origin() -> AsyncIterator[FakeOrigin]:
    origin = FakeOrigin()
    await origin.server.start_server()
    yield origin
    await origin.server.close()


@pytest.fixture
async def two_processes(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[list[Client]]:
    """Two servers of one name on one database, media directory and signing key."""
    url = database_factory()
    shared = {
        "media_store_path": str(tmp_path / "media"),
        "signing_key_path": str(tmp_path / "signing.key"),
        "rate_limits.enabled": False,
        **PEER_CONFIG,
    }
    clients: list[Client] = []
    dbs: list[Database] = []
    try:
        for i in range(2):
            config = make_config(tmp_path / f"hs{i}", **shared)
            db = Database(url, size=4)
            await db.open()
            dbs.append(db)
            key = load_or_create_signing_key(config.signing_key_file)
            hs = build_homeserver(config=config, db=db, signing_key=key)
            await hs.start()
            client: Client = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
            await client.start_server()
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            await client.close()
            await client.app[HOMESERVER].close()
        for db in dbs:
            await db.close()


async def _download(client: Client, token: str, ref: str) -> tuple[int, bytes]:
    resp = await client.get(f"{V1}/download/{ref}", headers=auth_header(token))
    return resp.status, await resp.read()


async def _thumbnail(client: Client, token: str, ref: str) -> tuple[int, bytes]:
    resp = await client.get(
        f"{V1}/thumbnail/{ref}", params={"width": 32, "height": 32}, headers=auth_header(token)
    )
    return resp.status, await resp.read()


async def test_two_processes_fetch_remote_media_from_its_origin_once(
    fake_origin: FakeOrigin, two_processes: list[Client]
) -> None:
    a, b = two_processes
    _, token = await make_user(a, "alice")
    thumbnail = png(32, 16)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_S)
        if "/thumbnail/" in request.path:
            return multipart(thumbnail, "image/png")
        return multipart(b"shared bytes")

    fake_origin.federation = slow
    ref = f"{fake_origin.server_name}/shared"
    answers = await asyncio.gather(*(_download(c, token, ref) for c in (a, b, a, b)))
    assert answers == [(200, b"shared bytes")] * 4
    assert fake_origin.hits == ["federation"]
    # Stored once: both serve it again without asking.
    assert await _download(b, token, ref) == (200, b"shared bytes")
    assert fake_origin.hits == ["federation"]

    # Thumbnails made by the origin, likewise.
    fake_origin.hits.clear()
    image = f"{fake_origin.server_name}/image"
    answers = await asyncio.gather(*(_thumbnail(c, token, image) for c in (a, b)))
    assert [status for status, _ in answers] == [200, 200]
    assert all(Image.open(io.BytesIO(body)).size == (32, 16) for _, body in answers)
    assert fake_origin.hits == ["federation"]


async def test_a_failed_fetch_lets_the_waiting_process_fetch(
    fake_origin: FakeOrigin, two_processes: list[Client]
) -> None:
    a, b = two_processes
    _, token = await make_user(a, "alice")
    calls = 0

    async def fails_first(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(SLOW_S)
        if calls == 1:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "busy"}, status=500)
        return multipart(b"second try")

    fake_origin.federation = fails_first
    ref = f"{fake_origin.server_name}/flaky"
    first = asyncio.create_task(_download(a, token, ref))
    await asyncio.sleep(SLOW_S / 2)  # a holds the fetch; b waits on it
    second = await _download(b, token, ref)
    assert (await first)[0] == 502
    assert second == (200, b"second try")
    assert fake_origin.hits == ["federation", "federation"]
