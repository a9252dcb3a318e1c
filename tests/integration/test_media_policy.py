"""Media policy through the real HTTP API: authenticated media (Synapse's
`enable_authenticated_media`: media stored after the switch is kept off the legacy
unauthenticated paths, older media is not), per-user upload quotas
(`media_upload_limits`) and retention by last access (`media_retention`)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from homeserver.api.context import HOMESERVER
from homeserver.app import build_app
from homeserver.config import ConfigError
from homeserver.datadir import load_or_create_signing_key
from homeserver.services.core.clock import now_ms
from homeserver.services.wiring import build_homeserver
from homeserver.storage.core.pool import Database
from homeserver.storage.media import media as media_store
from homeserver.storage.media import retention as retention_store
from tests.integration.conftest import auth_header, make_config, make_user

Client = TestClient[Any, Any]
V1 = "/_matrix/client/v1/media"
V3 = "/_matrix/media/v3"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 220)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def same_server(
    tmp_path: Path, database_factory: Callable[[], str]
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: the same server (database, data directory) started again with other
    settings, as an operator restarting it after changing its configuration."""
    url = database_factory()
    started: list[tuple[Client, Database]] = []

    async def start(**overrides: Any) -> Client:
        config = make_config(tmp_path / "hs", **{"rate_limits.enabled": False, **overrides})
        db = Database(url, size=4)
        await db.open()
        hs = build_homeserver(
            config=config, db=db, signing_key=load_or_create_signing_key(config.signing_key_file)
        )
        await hs.start()
        client = TestClient(TestServer(build_app(hs), host="127.0.0.1"))
        await client.start_server()
        started.append((client, db))
        return client

    yield start
    for client, db in started:
        await client.close()
        await client.app[HOMESERVER].close()
        await db.close()


async def upload(client: Client, headers: dict[str, str], data: bytes, kind: str) -> str:
    resp = await client.post(f"{V3}/upload", data=data, headers={**headers, "Content-Type": kind})
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["content_uri"]).removeprefix("mxc://")


async def legacy_status(client: Client, ref: str) -> tuple[int, int]:
    """Statuses of the legacy download and thumbnail of `ref`, without a token."""
    download = await client.get(f"{V3}/download/{ref}")
    await download.read()
    thumb = await client.get(f"{V3}/thumbnail/{ref}", params={"width": 32, "height": 32})
    await thumb.read()
    return download.status, thumb.status


async def test_media_from_before_the_switch_stays_on_the_legacy_paths(
    same_server: Callable[..., Any],
) -> None:
    before = await same_server(enable_authenticated_media=False)
    alice = auth_header((await make_user(before, "alice"))[1])
    old = await upload(before, alice, png(80, 60), "image/png")
    assert await legacy_status(before, old) == (200, 200)
    await before.close()

    after = await same_server()  # the default is on, as in Synapse
    new = await upload(after, alice, png(80, 60), "image/png")

    assert await legacy_status(after, old) == (200, 200)
    assert await legacy_status(after, new) == (404, 404)
    resp = await after.get(f"{V3}/download/{new}")
    assert (await resp.json())["errcode"] == "M_NOT_FOUND"
    # Both are served to authenticated requests.
    for ref in (old, new):
        resp = await after.get(f"{V1}/download/{ref}", headers=alice)
        assert resp.status == 200 and await resp.read() == png(80, 60)
        resp = await after.get(
            f"{V1}/thumbnail/{ref}", params={"width": 32, "height": 32}, headers=alice
        )
        assert resp.status == 200
    await after.close()

    # Switched off again: the legacy paths serve everything, as in Synapse.
    off = await same_server(enable_authenticated_media=False)
    assert await legacy_status(off, new) == (200, 200)


async def test_async_uploads_are_marked_too(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"rate_limits.enabled": False})
    alice = auth_header((await make_user(client, "alice"))[1])
    resp = await client.post("/_matrix/media/v1/create", headers=alice)
    ref = str((await resp.json())["content_uri"]).removeprefix("mxc://")
    resp = await client.put(
        f"{V3}/upload/{ref}", data=b"later", headers={**alice, "Content-Type": "text/plain"}
    )
    assert resp.status == 200, await resp.text()
    assert (await legacy_status(client, ref))[0] == 404
    resp = await client.get(f"{V1}/download/{ref}", headers=alice)
    assert resp.status == 200 and await resp.read() == b"later"


async def test_upload_limits_per_user(homeserver_client: Callable[..., Any]) -> None:
    limits = [
        {"time_period": "1h", "max_size": 100},
        {"time_period": "1w", "max_size": "1K", "info_uri": "https://example.org/plans"},
    ]
    client = await homeserver_client(media_upload_limits=limits, **{"rate_limits.enabled": False})
    alice = auth_header((await make_user(client, "alice"))[1])
    bob = auth_header((await make_user(client, "bob"))[1])

    await upload(client, alice, b"a" * 60, "text/plain")
    resp = await client.post(
        f"{V3}/upload", data=b"b" * 60, headers={**alice, "Content-Type": "text/plain"}
    )
    body = await resp.json()
    assert (resp.status, body["errcode"]) == (403, "M_USER_LIMIT_EXCEEDED")
    # Where the user reads why: the server's own page, as the limit names none.
    page = await client.get(urlparse(body["info_uri"]).path)
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    # What still fits in the hour passes; the quota is per user.
    await upload(client, alice, b"c" * 40, "text/plain")
    await age(client, await upload(client, bob, b"d" * 100, "text/plain"), 2)
    # The week's limit, with its own page: bob's uploads of the past days add up.
    for _ in range(9):
        await age(client, await upload(client, bob, b"f" * 100, "text/plain"), 2)
    resp = await client.post(
        f"{V3}/upload", data=b"g" * 100, headers={**bob, "Content-Type": "text/plain"}
    )
    body = await resp.json()
    assert (resp.status, body["info_uri"]) == (403, "https://example.org/plans")

    # Async uploads count against the same quota.
    resp = await client.post("/_matrix/media/v1/create", headers=alice)
    ref = str((await resp.json())["content_uri"]).removeprefix("mxc://")
    resp = await client.put(
        f"{V3}/upload/{ref}", data=b"e", headers={**alice, "Content-Type": "text/plain"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_USER_LIMIT_EXCEEDED")


async def test_bad_media_policy_stops_the_start(homeserver_client: Callable[..., Any]) -> None:
    for bad in ([{"time_period": "1h"}], [{"time_period": "soon", "max_size": "1M"}], ["1h"]):
        with pytest.raises(ConfigError, match="media_upload_limits"):
            await homeserver_client(media_upload_limits=bad)
    for retention in ({"local_media_lifetime": "forever"}, {"local_lifetime": "1d"}):
        with pytest.raises(ConfigError, match="media_retention"):
            await homeserver_client(media_retention=retention)


DAY_MS = 24 * 3600 * 1000


async def age(client: Client, ref: str, days: int) -> None:
    """Make media look stored (and last served) `days` ago."""
    then = now_ms() - days * DAY_MS
    origin, media_id = ref.split("/")
    async with client.app[HOMESERVER].db.pool.connection() as conn:
        await conn.execute(
            "UPDATE media SET created_ts = %s, uploaded_ts = %s, last_access_ts = NULL"
            " WHERE origin = %s AND media_id = %s",
            (then, then, origin, media_id),
        )


async def test_retention_deletes_media_not_served_for_its_lifetime(
    homeserver_client: Callable[..., Any],
) -> None:
    client = await homeserver_client(
        media_retention={"local_media_lifetime": "30d", "remote_media_lifetime": "7d"},
        **{"rate_limits.enabled": False},
    )
    hs = client.app[HOMESERVER]
    _, admin = await make_user(client, "admin", admin=True)
    alice = auth_header(admin)
    admin_v1 = "/_synapse/admin/v1"
    image = png(120, 90)
    expired, served, recent, protected, quarantined = [
        await upload(client, alice, image + bytes([i]), "image/png") for i in range(5)
    ]
    # A thumbnail of the expired image, which must go with it.
    resp = await client.get(
        f"{V1}/thumbnail/{expired}", params={"width": 32, "height": 32}, headers=alice
    )
    assert resp.status == 200
    for ref in (expired, served, protected, quarantined):
        await age(client, ref, 40)
    await age(client, recent, 20)
    for path in (f"protect/{protected.split('/')[1]}", f"quarantine/{quarantined}"):
        resp = await client.post(f"{admin_v1}/media/{path}", headers=alice, json={})
        assert resp.status == 200, await resp.text()
    # Served today: its last access counts, not its age.
    resp = await client.get(f"{V1}/download/{served}", headers=alice)
    assert resp.status == 200

    # Cached remote media: the week's lifetime applies to it.
    remote_sha, size = await hs.media_files.write_bytes(b"remote bytes")
    async with hs.db.pool.connection() as conn:
        await media_store.insert_media(
            conn,
            "other.example",
            "cached",
            uploader=None,
            content_type="text/plain",
            filename=None,
            size=size,
            sha256=remote_sha,
            now_ms=now_ms(),
        )
    await age(client, "other.example/cached", 8)
    # A thumbnail the other server made of media we never fetched whole, as old.
    thumb_sha, thumb_size = await hs.media_files.write_bytes(b"remote thumbnail")
    async with hs.db.pool.connection() as conn:
        await media_store.insert_thumbnail(
            conn,
            "other.example",
            "onlythumb",
            media_store.ThumbnailRow(32, 32, "scale", False, "image/png", thumb_size, thumb_sha),
            now_ms() - 8 * DAY_MS,
        )

    # Another process of the cluster applying retention: this one skips the run.
    async with hs.db.pool.connection() as other_process:
        assert await retention_store.try_lock(other_process)
        assert await hs.retention.apply(now_ms()) == 0
        await retention_store.unlock(other_process)
    assert await hs.retention.apply(now_ms()) == 2
    async with hs.db.pool.connection() as conn:
        left = {
            f"{row.origin}/{row.media_id}"
            for ref in (expired, served, recent, protected, quarantined, "other.example/cached")
            if (row := await media_store.get_media(conn, *ref.split("/"))) is not None
        }
        thumbs = await conn.execute(
            "SELECT count(*) FROM media_thumbnails WHERE media_id = %s", (expired.split("/")[1],)
        )
        assert (await thumbs.fetchone()) == (0,)
    assert left == {served, recent, protected, quarantined}
    assert not hs.media_files.exists(remote_sha)
    assert not hs.media_files.exists(thumb_sha)
    resp = await client.get(f"{V1}/download/{expired}", headers=alice)
    assert resp.status == 404
