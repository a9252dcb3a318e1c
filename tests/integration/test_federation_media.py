"""Media across servers: our users download (and thumbnail) another server's media
through their own server, which fetches it over federation and caches it; the
federation media endpoints we serve; the fallback to the legacy endpoint; and origins
that hang, lie about sizes or send malformed answers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from homeserver.api.context import HOMESERVER
from homeserver.storage.media import media as media_store
from tests.integration.conftest import auth_header, make_user
from tests.integration.peers import PEER_CONFIG, free_port
from tests.integration.test_federation_rooms import hs_of, peer

Client = TestClient[Any, Any]
V1 = "/_matrix/client/v1/media"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 200, 0)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def two(homeserver_client: Callable[..., Any]) -> tuple[Client, Client]:
    return await peer(homeserver_client), await peer(homeserver_client)


async def upload(client: Client, token: str, data: bytes, content_type: str, name: str) -> str:
    resp = await client.post(
        "/_matrix/media/v3/upload",
        data=data,
        params={"filename": name},
        headers={**auth_header(token), "Content-Type": content_type},
    )
    assert resp.status == 200, await resp.text()
    uri: str = (await resp.json())["content_uri"]
    return uri.removeprefix("mxc://")


async def cached_row(client: Client, ref: str) -> media_store.MediaRow | None:
    origin, media_id = ref.split("/")
    async with hs_of(client).db.pool.connection() as conn:
        return await media_store.get_media(conn, origin, media_id)


async def test_remote_download_and_thumbnail(two: tuple[Client, Client]) -> None:
    a, b = two
    _, alice = await make_user(a, "alice")
    _, bob = await make_user(b, "bob")
    ref = await upload(a, alice, b"%PDF-1.4 remote bytes", "application/pdf", "report.pdf")
    assert ref.startswith(hs_of(a).server_name + "/")

    resp = await b.get(f"{V1}/download/{ref}", headers=auth_header(bob))
    assert resp.status == 200, await resp.text()
    assert await resp.read() == b"%PDF-1.4 remote bytes"
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Content-Disposition"] == "attachment; filename=report.pdf"

    row = await cached_row(b, ref)
    assert row is not None and row.uploader is None and row.filename == "report.pdf"
    # Cached while authenticated media is on: not served on the unauthenticated path.
    resp = await b.get(f"/_matrix/media/v3/download/{ref}?allow_remote=false")
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")

    image = await upload(a, alice, png(200, 100), "image/png", "green.png")
    resp = await b.get(
        f"{V1}/thumbnail/{image}", params={"width": 64, "height": 64}, headers=auth_header(bob)
    )
    assert resp.status == 200, await resp.text()
    assert Image.open(io.BytesIO(await resp.read())).size == (64, 32)
    # The origin made the thumbnail: the full image never came over.
    assert await cached_row(b, image) is None
    resp = await b.get(
        f"{V1}/thumbnail/{image}", params={"width": 64, "height": 64}, headers=auth_header(bob)
    )
    assert resp.status == 200 and Image.open(io.BytesIO(await resp.read())).size == (64, 32)
    resp = await b.get(
        f"{V1}/thumbnail/{hs_of(a).server_name}/noSuchImage",
        params={"width": 64, "height": 64},
        headers=auth_header(bob),
    )
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")

    resp = await b.get(
        f"{V1}/download/{hs_of(a).server_name}/doesNotExist", headers=auth_header(bob)
    )
    assert (resp.status, (await resp.json())["errcode"]) == (404, "M_NOT_FOUND")
    # allow_remote=false never fetches.
    other = await upload(a, alice, b"not fetched", "text/plain", "n.txt")
    resp = await b.get(f"/_matrix/media/v3/download/{other}?allow_remote=false")
    assert resp.status == 404
    assert await cached_row(b, other) is None


async def test_federation_endpoints_serve_multipart(two: tuple[Client, Client]) -> None:
    a, b = two
    _, alice = await make_user(a, "alice")
    ref = await upload(a, alice, png(40, 40), "image/png", "sq.png")
    media_id = ref.split("/")[1]

    # Unsigned requests are refused.
    resp = await a.get(f"/_matrix/federation/v1/media/download/{media_id}")
    assert (resp.status, (await resp.json())["errcode"]) == (401, "M_UNAUTHORIZED")

    async def parts(resp: aiohttp.ClientResponse) -> list[tuple[dict[str, str], bytes]]:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "multipart/mixed"
        reader = aiohttp.MultipartReader(resp.headers, resp.content)
        found = []
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            found.append((dict(part.headers), await part.read()))
        return found

    client = hs_of(b).remote_client
    origin = hs_of(a).server_name
    got = await client.request_stream(
        origin, f"/_matrix/federation/v1/media/download/{media_id}", parts
    )
    assert len(got) == 2
    assert got[0][0]["Content-Type"] == "application/json" and got[0][1] == b"{}"
    assert got[1][0]["Content-Type"] == "image/png"
    assert got[1][0]["Content-Disposition"] == "inline; filename=sq.png"
    assert got[1][1] == png(40, 40)

    got = await client.request_stream(
        origin,
        f"/_matrix/federation/v1/media/thumbnail/{media_id}",
        parts,
        query={"width": "32", "height": "32", "method": "crop"},
    )
    assert Image.open(io.BytesIO(got[1][1])).size == (32, 32)
    assert got[1][0]["Content-Disposition"].startswith("inline")

    async def status(resp: aiohttp.ClientResponse) -> int:
        return resp.status

    missing = await client.request_stream(
        origin, "/_matrix/federation/v1/media/download/nope", status
    )
    assert missing == 404


class FakeOrigin:
    """A server that answers media requests as a test tells it to."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.federation: Callable[[web.Request], Any] | None = None
        self.legacy: Callable[[web.Request], Any] | None = None
        self.hits: list[str] = []
        # Files served at /cdn/{name}, and redirects at /hop/{n} (n hops to /cdn/file).
        self.cdn: dict[str, bytes] = {}
        app = web.Application()
        app.router.add_get("/_matrix/federation/v1/media/download/{id}", self._federation)
        app.router.add_get("/_matrix/federation/v1/media/thumbnail/{id}", self._federation)
        app.router.add_get("/_matrix/media/v3/download/{server}/{id}", self._legacy)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_get("/hop/{n}", self._hop)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)

    async def _cdn(self, request: web.Request) -> web.Response:
        self.hits.append("cdn " + request.match_info["name"])
        body = self.cdn.get(request.match_info["name"])
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="image/png")

    async def _hop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        target = "/cdn/file" if n <= 1 else f"/hop/{n - 1}"
        return web.Response(status=302, headers={"Location": target})

    async def _federation(self, request: web.Request) -> web.StreamResponse:
        self.hits.append("federation")
        if self.federation is None:
            return web.json_response({"errcode": "M_UNRECOGNIZED"}, status=404)
        result: web.StreamResponse = await self.federation(request)
        return result

    async def _legacy(self, request: web.Request) -> web.StreamResponse:
        self.hits.append("legacy " + request.query_string)
        if self.legacy is None:
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        result: web.StreamResponse = await self.legacy(request)
        return result


@pytest.fixture
async def fake_origin() -> AsyncIterator[FakeOrigin]:
    origin = FakeOrigin()
    await origin.server.start_server()
    yield origin
    await origin.server.close()


@pytest.fixture
async def ours(homeserver_client: Callable[..., Any]) -> tuple[Client, str]:
    port = free_port()
    client: Client = await homeserver_client(
        server_name=f"127.0.0.1:{port}",
        port=port,
        **PEER_CONFIG,
        **{
            "rate_limits.enabled": False,
            "media.max_upload_size": 1000,
            "media.remote_timeout_s": 1.0,
        },
    )
    _, token = await make_user(client, "alice")
    return client, token


def multipart(
    body: bytes, content_type: str = "text/plain", location: str | None = None
) -> web.Response:
    boundary = "b0undary"
    second = f"Location: {location}" if location else f"Content-Type: {content_type}"
    payload = (
        (
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
            f"--{boundary}\r\n{second}\r\n\r\n"
        ).encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return web.Response(
        body=payload, headers={"Content-Type": f"multipart/mixed; boundary={boundary}"}
    )


async def get(ours: tuple[Client, str], ref: str) -> tuple[int, Any, bytes]:
    client, token = ours
    resp = await client.get(f"{V1}/download/{ref}", headers=auth_header(token))
    return resp.status, resp.headers, await resp.read()


async def test_fallback_to_the_legacy_endpoint(
    fake_origin: FakeOrigin, ours: tuple[Client, str]
) -> None:
    async def legacy(request: web.Request) -> web.Response:
        return web.Response(
            body=b"old style",
            headers={
                "Content-Type": "text/plain",
                "Content-Disposition": "inline; filename*=utf-8''na%C3%AFve.txt",
            },
        )

    fake_origin.legacy = legacy
    status, headers, body = await get(ours, f"{fake_origin.server_name}/oldMedia")
    assert status == 200 and body == b"old style"
    assert headers["Content-Disposition"] == "inline; filename*=utf-8''na%C3%AFve.txt"
    assert fake_origin.hits == ["federation", "legacy allow_remote=false&timeout_ms=20000"]


async def test_hostile_origins(fake_origin: FakeOrigin, ours: tuple[Client, str]) -> None:
    origin = fake_origin.server_name

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    fake_origin.federation = hang
    status, _, body = await get(ours, f"{origin}/hangs")
    assert status == 502, body

    async def too_big(request: web.Request) -> web.Response:
        return multipart(b"x" * 1001)

    fake_origin.federation = too_big
    status, _, body = await get(ours, f"{origin}/big")
    assert status == 502 and b"M_TOO_LARGE" in body

    async def streams_too_much(request: web.Request) -> web.StreamResponse:
        # No Content-Length: the size is only known by counting.
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for _ in range(20):
            await resp.write(b"y" * 100)
        await resp.write_eof()
        return resp

    fake_origin.federation = None
    fake_origin.legacy = streams_too_much
    status, _, body = await get(ours, f"{origin}/bigLegacy")
    assert status == 502 and b"M_TOO_LARGE" in body

    async def not_multipart(request: web.Request) -> web.Response:
        return web.Response(body=b"plain", content_type="text/plain")

    async def broken_multipart(request: web.Request) -> web.Response:
        return web.Response(
            body=b"--zz\r\nContent-Type: application/json\r\n\r\n{}",
            headers={"Content-Type": "multipart/mixed; boundary=zz"},
        )

    async def refuses(request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    for handler, expected in ((not_multipart, 502), (broken_multipart, 502), (refuses, 404)):
        fake_origin.federation = handler
        status, _, body = await get(ours, f"{origin}/{handler.__name__}")
        assert status == expected, (handler.__name__, body)

    # None of it was cached, and nothing half-written is left behind.
    client, _ = ours
    async with hs_of(client).db.pool.connection() as conn:
        for media_id in ("hangs", "big", "bigLegacy", "not_multipart", "broken_multipart"):
            assert await media_store.get_media(conn, origin, media_id) is None
    hs = client.server.app[HOMESERVER]
    assert list((hs.config.media_dir / "tmp").iterdir()) == []

    # A good answer after all that is served and cached, with its type checked.
    async def good(request: web.Request) -> web.Response:
        return multipart(b"fine", content_type="<b>not a type</b>")

    fake_origin.federation = good
    status, headers, body = await get(ours, f"{origin}/good")
    assert status == 200 and body == b"fine"
    assert headers["Content-Type"] == "application/octet-stream"


async def test_redirected_media_answers(fake_origin: FakeOrigin, ours: tuple[Client, str]) -> None:
    """A multipart answer whose content part is a `Location`: followed (with the
    target's own redirects), under the same size and address limits."""
    origin = fake_origin.server_name
    base = f"http://{origin}"
    fake_origin.cdn["file"] = png(20, 10)
    target = {"to": f"{base}/hop/2"}

    async def redirect(request: web.Request) -> web.Response:
        return multipart(b"", location=target["to"])

    fake_origin.federation = redirect
    status, headers, body = await get(ours, f"{origin}/viaCdn")
    assert status == 200 and body == png(20, 10)
    assert headers["Content-Type"] == "image/png"
    assert "cdn file" in fake_origin.hits

    # A thumbnail answered by redirect likewise (the origin made it: no full file here).
    client, token = ours
    resp = await client.get(
        f"{V1}/thumbnail/{origin}/thumbViaCdn",
        params={"width": "32", "height": "32"},
        headers=auth_header(token),
    )
    assert resp.status == 200 and await resp.read() == png(20, 10)
    assert await cached_row(client, f"{origin}/thumbViaCdn") is None

    for bad, media_id in (
        (f"{base}/hop/9", "tooManyHops"),  # more redirects than allowed
        ("http://10.1.2.3/file", "privateAddress"),  # outside the allowed ranges
        ("file:///etc/passwd", "notHttp"),
        (f"{base}/cdn/missing", "missingTarget"),
    ):
        target["to"] = bad
        status, _, body = await get(ours, f"{origin}/{media_id}")
        assert status in (404, 502), (media_id, status, body)
        assert await cached_row(client, f"{origin}/{media_id}") is None

    fake_origin.cdn["big"] = b"z" * 1001
    target["to"] = f"{base}/cdn/big"
    status, _, body = await get(ours, f"{origin}/bigViaCdn")
    assert status == 502 and b"M_TOO_LARGE" in body
