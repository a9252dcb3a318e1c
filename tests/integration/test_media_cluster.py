"""Remote media fetched once in a cluster: two processes on one database (and one media
directory) asked at once for the same remote media ask its origin once; the other
waits and serves the stored copy. A fetch that fails, or a fetching process that dies
(its lock connection cut), lets the waiting process fetch."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
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
def database_url(database_factory: Callable[[], str]) -> str:
    return database_factory()


@pytest.fixture
async def two_processes(tmp_path: Path, database_url: str) -> AsyncIterator[list[Client]]:
    """Two servers of one name on one database, media directory and signing key."""
    url = database_url
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


async def _cut_lock_holder(database_url: str, key: str) -> int:
    """End the database session holding the fetch lock of `key`, as when its process
    dies; how many sessions were ended."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
            " AND (classid::bigint << 32 | objid::bigint)"
            "   = hashtextextended('remote_media_fetch:' || %s, 0)",
            (key,),
        )
        return len(await cur.fetchall())


async def test_a_dead_fetcher_lets_the_waiting_process_fetch(
    fake_origin: FakeOrigin, two_processes: list[Client], database_url: str
) -> None:
    a, b = two_processes
    _, token = await make_user(a, "alice")
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hangs_first(request: web.Request) -> web.Response:
        if not arrived.is_set():
            arrived.set()
            await release.wait()
        return multipart(b"fetched")

    fake_origin.federation = hangs_first
    ref = f"{fake_origin.server_name}/orphan"
    first = asyncio.create_task(_download(a, token, ref))
    await asyncio.wait_for(arrived.wait(), 10)
    second = asyncio.create_task(_download(b, token, ref))
    await asyncio.sleep(SLOW_S)
    assert not second.done(), "b waits for a's fetch"
    assert await _cut_lock_holder(database_url, f"media {ref}") == 1
    assert await asyncio.wait_for(second, 10) == (200, b"fetched")
    assert fake_origin.hits == ["federation", "federation"]
    release.set()
    assert await first == (200, b"fetched")
