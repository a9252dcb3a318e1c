"""The media repository through the real HTTP API: uploads (direct and async), the
limit, downloads with the spec's headers, the legacy unauthenticated paths, and
thumbnails, including the refusals (too large, unknown, malformed ids, another user's
async upload, missing auth, corrupt images)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from homeserver.api.context import HOMESERVER
from homeserver.storage.media import media as media_store
from tests.integration.conftest import auth_header, make_user

Client = TestClient[Any, Any]
V1 = "/_matrix/client/v1/media"
V3 = "/_matrix/media/v3"
R0 = "/_matrix/media/r0"


def png(width: int, height: int, color: tuple[int, ...] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def animated_gif(frames: int = 3) -> bytes:
    images = [Image.new("RGB", (120, 80), (40 * i, 0, 0)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    return out.getvalue()


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    return await homeserver_client(**{"rate_limits.enabled": False})


@pytest.fixture
async def alice(client: Client) -> dict[str, str]:
    return auth_header((await make_user(client, "alice"))[1])


async def upload(
    client: Client,
    headers: dict[str, str],
    data: bytes,
    content_type: str | None = "text/plain",
    filename: str | None = None,
) -> tuple[int, Any]:
    params = {"filename": filename} if filename is not None else {}
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    resp = await client.post(f"{V3}/upload", data=data, headers=sent, params=params)
    return resp.status, await resp.json()


async def uploaded(client: Client, headers: dict[str, str], data: bytes, **kw: Any) -> str:
    """Upload and return "server/mediaId" of the new mxc:// URI."""
    status, body = await upload(client, headers, data, **kw)
    assert status == 200, body
    uri: str = body["content_uri"]
    assert uri.startswith("mxc://test.local/")
    return uri.removeprefix("mxc://")


async def test_upload_then_download_authenticated_and_legacy(
    client: Client, alice: dict[str, str]
) -> None:
    ref = await uploaded(client, alice, b"hello media", filename="notes.txt")

    resp = await client.get(f"{V1}/download/{ref}", headers=alice)
    assert resp.status == 200
    assert await resp.read() == b"hello media"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.headers["Content-Disposition"] == "inline; filename=notes.txt"
    assert resp.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")
    assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"

    # Uploaded while authenticated media is on (the default): not on the legacy paths.
    for prefix in (V3, R0):
        resp = await client.get(f"{prefix}/download/{ref}")
        assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")

    # The file name in the path replaces the stored one.
    resp = await client.get(f"{V1}/download/{ref}/other%20name.txt", headers=alice)
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'inline; filename="other name.txt"'

    # Media players ask for ranges.
    resp = await client.get(f"{V1}/download/{ref}", headers={**alice, "Range": "bytes=6-"})
    assert resp.status == 206
    assert await resp.read() == b"media"


async def test_r0_upload_and_no_filename(client: Client, alice: dict[str, str]) -> None:
    resp = await client.post(
        f"{R0}/upload", data=b"\x00\x01", headers={**alice, "Content-Type": "image/png"}
    )
    assert resp.status == 200
    ref = (await resp.json())["content_uri"].removeprefix("mxc://")
    resp = await client.get(f"{V1}/download/{ref}", headers=alice)
    assert resp.headers["Content-Type"] == "image/png"
    # Uploaded without a filename: the header carries none.
    assert resp.headers["Content-Disposition"] == "inline"


async def test_unsafe_types_are_attachments_and_names_are_encoded(
    client: Client, alice: dict[str, str]
) -> None:
    ref = await uploaded(
        client, alice, b"<script>alert(1)</script>", content_type="text/html", filename="x.html"
    )
    resp = await client.get(f"{V1}/download/{ref}", headers=alice)
    assert resp.headers["Content-Disposition"] == "attachment; filename=x.html"
    assert resp.headers["Content-Type"].startswith("text/html")

    ref = await uploaded(client, alice, b"x", content_type=None, filename='smørbrød "1".pdf')
    resp = await client.get(f"{V1}/download/{ref}", headers=alice)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename*=utf-8''" + quote('smørbrød "1".pdf', safe="")
    )

    # A malformed content type is not echoed back.
    ref = await uploaded(client, alice, b"x", content_type="nonsense")
    resp = await client.get(f"{V1}/download/{ref}", headers=alice)
    assert resp.headers["Content-Type"] == "application/octet-stream"

    status, body = await upload(client, alice, b"x", filename="a\nb")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_authentication_is_required_where_the_spec_says(
    client: Client, alice: dict[str, str]
) -> None:
    ref = await uploaded(client, alice, b"secret")
    for path in (
        f"{V1}/download/{ref}",
        f"{V1}/thumbnail/{ref}?width=32&height=32",
        f"{V1}/config",
        f"{V3}/config",
    ):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"
    resp = await client.post(f"{V3}/upload", data=b"x")
    assert resp.status == 401
    resp = await client.post("/_matrix/media/v1/create")
    assert resp.status == 401
    resp = await client.get(f"{V1}/download/{ref}", headers=auth_header("nonsense"))
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_config_reports_the_limit(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"media.max_upload_size": 12345})
    headers = auth_header((await make_user(client, "alice"))[1])
    for path in (f"{V1}/config", f"{V3}/config", f"{R0}/config"):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200
        assert await resp.json() == {"m.upload.size": 12345}


async def test_upload_limit(homeserver_client: Callable[..., Any]) -> None:
    # The media limit is above the general request limit: a legal upload must pass both.
    client = await homeserver_client(max_request_size=2048, **{"media.max_upload_size": 6000})
    headers = auth_header((await make_user(client, "alice"))[1])
    ref = await uploaded(client, headers, b"a" * 6000)
    resp = await client.get(f"{V1}/download/{ref}", headers=headers)
    assert len(await resp.read()) == 6000

    status, body = await upload(client, headers, b"a" * 6001)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")

    async def chunked() -> Any:
        for _ in range(10):
            yield b"b" * 1000

    # Without a Content-Length the bytes are counted as they arrive.
    resp = await client.post(
        f"{V3}/upload", data=chunked(), headers={**headers, "Content-Type": "text/plain"}
    )
    assert (resp.status, (await resp.json())["errcode"]) == (413, "M_TOO_LARGE")
    # Nothing half-written is left behind.
    hs = client.server.app[HOMESERVER]
    assert list((hs.config.media_dir / "tmp").iterdir()) == []
    # The general limit still applies elsewhere.
    status, body = await make_room_with_big_body(client, headers)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")


async def make_room_with_big_body(client: Client, headers: dict[str, str]) -> tuple[int, Any]:
    resp = await client.post(
        "/_matrix/client/v3/createRoom", json={"name": "x" * 3000}, headers=headers
    )
    return resp.status, await resp.json()


async def test_same_bytes_are_stored_once(client: Client, alice: dict[str, str]) -> None:
    first = await uploaded(client, alice, b"same bytes", filename="a.txt")
    second = await uploaded(client, alice, b"same bytes", filename="b.txt")
    assert first != second
    hs = client.server.app[HOMESERVER]
    files = [p for p in (hs.config.media_dir / "sha256").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == b"same bytes"
    resp = await client.get(f"{V1}/download/{second}", headers=alice)
    assert resp.headers["Content-Disposition"] == "inline; filename=b.txt"


async def test_unknown_and_malformed_media(client: Client, alice: dict[str, str]) -> None:
    for path in (f"{V1}/download/test.local/nosuchmedia", f"{V3}/download/test.local/nosuch"):
        resp = await client.get(path, headers=alice)
        assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")
    for ref in ("bad%20server/abc", "test.local/bad.id", "test.local/a%2Fb"):
        for path in (f"{V1}/download/{ref}", f"{V1}/thumbnail/{ref}?width=1&height=1"):
            resp = await client.get(path, headers=alice)
            assert resp.status == 400, path
            assert (await resp.json())["errcode"] == "M_INVALID_PARAM"
    resp = await client.get(f"{V3}/download/test.local/abc?allow_remote=maybe")
    assert resp.status == 400


async def test_async_upload(client: Client, alice: dict[str, str]) -> None:
    resp = await client.post("/_matrix/media/v1/create", headers=alice)
    assert resp.status == 200
    created = await resp.json()
    ref = created["content_uri"].removeprefix("mxc://")
    assert created["unused_expires_at"] > 0

    # Not uploaded yet: the download waits up to timeout_ms, then says so.
    resp = await client.get(f"{V1}/download/{ref}?timeout_ms=0", headers=alice)
    assert (resp.status, (await resp.json())["errcode"]) == (504, "M_NOT_YET_UPLOADED")

    bob = auth_header((await make_user(client, "bob"))[1])
    resp = await client.put(f"{V3}/upload/{ref}", data=b"bob's", headers=bob)
    assert (resp.status, (await resp.json())["errcode"]) == (403, "M_FORBIDDEN")

    # A download started before the upload gets the content once it arrives.
    waiting = asyncio.ensure_future(
        client.get(f"{V1}/download/{ref}?timeout_ms=10000", headers=alice)
    )
    await asyncio.sleep(0.2)
    resp = await client.put(
        f"{V3}/upload/{ref}?filename=late.txt",
        data=b"arrived later",
        headers={**alice, "Content-Type": "text/plain"},
    )
    assert resp.status == 200 and await resp.json() == {}
    got = await waiting
    assert got.status == 200
    assert await got.read() == b"arrived later"
    assert got.headers["Content-Disposition"] == "inline; filename=late.txt"

    resp = await client.put(f"{V3}/upload/{ref}", data=b"again", headers=alice)
    assert (resp.status, (await resp.json())["errcode"]) == (409, "M_CANNOT_OVERWRITE_MEDIA")

    for other in ("test.local/neverCreated", "elsewhere.example/abc"):
        resp = await client.put(f"{V3}/upload/{other}", data=b"x", headers=alice)
        assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")


async def test_async_upload_limits(homeserver_client: Callable[..., Any]) -> None:
    client = await homeserver_client(**{"media.max_upload_size": 100, "rate_limits.enabled": False})
    headers = auth_header((await make_user(client, "alice"))[1])
    resp = await client.post("/_matrix/media/v1/create", headers=headers)
    ref = (await resp.json())["content_uri"].removeprefix("mxc://")
    resp = await client.put(f"{V3}/upload/{ref}", data=b"x" * 101, headers=headers)
    assert (resp.status, (await resp.json())["errcode"]) == (413, "M_TOO_LARGE")
    # The refused upload left the id open for a good one.
    resp = await client.put(f"{V3}/upload/{ref}", data=b"x" * 100, headers=headers)
    assert resp.status == 200

    statuses = []
    for _ in range(51):
        resp = await client.post("/_matrix/media/v1/create", headers=headers)
        statuses.append(resp.status)
    assert statuses[:50] == [200] * 50
    resp = await client.post("/_matrix/media/v1/create", headers=headers)
    assert (resp.status, (await resp.json())["errcode"]) == (429, "M_LIMIT_EXCEEDED")


async def thumb(
    client: Client, headers: dict[str, str], ref: str, **params: Any
) -> tuple[int, bytes, Any]:
    resp = await client.get(f"{V1}/thumbnail/{ref}", headers=headers, params=params)
    return resp.status, await resp.read(), resp.headers


async def test_thumbnails(client: Client, alice: dict[str, str]) -> None:
    ref = await uploaded(client, alice, png(400, 300), content_type="image/png")

    status, data, headers = await thumb(client, alice, ref, width=96, height=96, method="crop")
    assert status == 200, data
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Disposition"] == "inline; filename=thumbnail.png"
    assert Image.open(io.BytesIO(data)).size == (96, 96)

    status, data, _ = await thumb(client, alice, ref, width=300, height=300, method="scale")
    assert status == 200
    # Rounded up to the next ladder step (320), aspect ratio kept, never enlarged.
    assert Image.open(io.BytesIO(data)).size == (320, 240)

    # Made once: the second request reads the same stored bytes.
    status, again, _ = await thumb(client, alice, ref, width=300, height=300, method="scale")
    assert again == data
    hs = client.server.app[HOMESERVER]
    async with hs.db.pool.connection() as conn:
        row = await media_store.get_thumbnail(
            conn, "test.local", ref.split("/")[1], 320, 320, "scale", False
        )
    assert row is not None and row.size == len(data)

    # Authenticated media: not thumbnailed on the legacy path either.
    resp = await client.get(f"{V3}/thumbnail/{ref}", params={"width": 32, "height": 32})
    assert resp.status == 404

    photo = await uploaded(client, alice, jpeg(1000, 500), content_type="image/jpeg")
    status, data, headers = await thumb(client, alice, photo, width=64, height=64, method="crop")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (64, 64)


async def test_animated_thumbnails(client: Client, alice: dict[str, str]) -> None:
    ref = await uploaded(client, alice, animated_gif(), content_type="image/gif")
    status, data, headers = await thumb(client, alice, ref, width=64, height=64, animated="true")
    assert status == 200 and headers["Content-Type"] == "image/webp"
    image = Image.open(io.BytesIO(data))
    assert image.n_frames == 3  # type: ignore[attr-defined]
    status, data, headers = await thumb(client, alice, ref, width=64, height=64)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 1


async def test_thumbnail_refusals(client: Client, alice: dict[str, str]) -> None:
    image = await uploaded(client, alice, png(50, 50), content_type="image/png")
    for params, errcode in (
        ({"height": 32}, "M_MISSING_PARAM"),
        ({"width": "x", "height": 32}, "M_INVALID_PARAM"),
        ({"width": -5, "height": 32}, "M_INVALID_PARAM"),
        ({"width": 32, "height": 32, "method": "stretch"}, "M_INVALID_PARAM"),
    ):
        status, body, _ = await thumb(client, alice, image, **params)
        assert status == 400, params
        assert errcode.encode() in body

    # Not an image, and a corrupt one claiming to be: 400 M_UNKNOWN, never a 500.
    text = await uploaded(client, alice, b"just words", content_type="text/plain")
    corrupt = await uploaded(
        client, alice, b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, content_type="image/png"
    )
    truncated = await uploaded(client, alice, png(300, 300)[:120], content_type="image/png")
    for ref in (text, corrupt, truncated):
        status, body, _ = await thumb(client, alice, ref, width=32, height=32)
        assert status == 400, body
        assert b"M_UNKNOWN" in body

    status, body, _ = await thumb(client, alice, "test.local/nothingHere", width=32, height=32)
    assert status == 404 and b"M_NOT_FOUND" in body


async def test_decompression_bombs_are_refused(client: Client, alice: dict[str, str]) -> None:
    # A tiny file that decodes to 8000 x 8000 pixels.
    out = io.BytesIO()
    Image.new("1", (8000, 8000)).save(out, "PNG")
    ref = await uploaded(client, alice, out.getvalue(), content_type="image/png")
    status, body, _ = await thumb(client, alice, ref, width=32, height=32)
    assert status == 413 and b"M_TOO_LARGE" in body


async def test_an_interrupted_upload_leaves_nothing_behind(
    client: Client, alice: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    host, port = client.server.host, client.server.port
    _, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"POST {V3}/upload HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {alice['Authorization']}\r\n"
            "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        + b"z" * 5000
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()

    hs = client.server.app[HOMESERVER]
    tmp = hs.config.media_dir / "tmp"
    for _ in range(50):
        if not any(tmp.iterdir()):
            break
        await asyncio.sleep(0.1)
    assert list(tmp.iterdir()) == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    # The server is fine afterwards.
    assert await uploaded(client, alice, b"after") is not None
