"""Link previews through the real HTTP API, against a real web server on 127.0.0.1
(whitelisted in the config): OpenGraph and fallbacks, images stored in the media
repository and served back, redirects, the address, size and time limits, the cache,
the rate limit, and the refusals."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from tests.integration.conftest import auth_header, make_user

Client = TestClient[Any, Any]
V1 = "/_matrix/client/v1/media"
V3 = "/_matrix/media/v3"
MAX_SIZE = 100_000
ENABLED = {
    "media.url_preview.enabled": True,
    "media.url_preview.ip_range_whitelist": ["127.0.0.1/32"],
    "media.url_preview.max_size": MAX_SIZE,
    "media.url_preview.timeout_s": 1.0,
    "media.url_preview.url_blacklist": ["*.blocked.test", "127.0.0.1/secret/*"],
    "rate_limits.enabled": False,
}


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


IMAGE = png(120, 80)


class Origin:
    """A small website that counts the requests each path gets."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}", self.serve)
        return app

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        self._redirect(name)
        page = _page(name)
        if page is None:
            page = await _stream(name, request)
        return page or web.Response(status=404, text="no such page")

    def _redirect(self, name: str) -> None:
        """Raises the redirect the page `name` is, if it is one."""
        if name == "redirect":
            raise web.HTTPFound("/og")
        if name == "redirect2":
            raise web.HTTPMovedPermanently(self.url("/redirect"))
        if name == "loop":
            raise web.HTTPFound("/loop")
        if name == "to-private":
            # Loopback, but not the whitelisted 127.0.0.1.
            raise web.HTTPFound(self.url("/og").replace("127.0.0.1", "127.0.0.2"))
        if name == "to-file":
            raise web.HTTPFound("file:///etc/passwd")


def _page(name: str) -> web.Response | None:
    """The pages served whole: HTML of every kind, images and a document."""
    html = "text/html; charset=utf-8"
    if name == "og":
        return web.Response(
            content_type="text/html",
            charset="utf-8",
            text="""<html><head><title>Fallback title</title>
                <meta property="og:title" content="The  real &amp; title">
                <meta property="og:description" content="What the page is about">
                <meta property="og:image" content="/image.png">
                <meta property="og:image:width" content="9999">
                <meta property="og:site_name" content="Example">
                </head><body><p>hello</p></body></html>""",
        )
    if name == "plain":
        return web.Response(
            body=b"""<!doctype html><html><head>
                <title>
                  Plain   page
                </title>
                <meta name="description" content="Described by meta">
                <script>var x = "<title>not this</title>";</script>
                </head><body><img src="data:image/gif;base64,AAAA">
                <img src="icon.png" width="16" height="16">
                <img src="image.png" width="400"></body></html>""",
            headers={"Content-Type": html},
        )
    if name == "latin1":
        return web.Response(
            body="<html><head><title>Café crème</title></head></html>".encode("latin-1"),
            headers={"Content-Type": "text/html; charset=ISO-8859-1"},
        )
    if name == "broken":
        return web.Response(
            body=b"<html><head><title>Still <b>here</title><meta property='og:x' content"
            b"=\xff\xfe\x00<<<</script><!-- never closed <img src=",
            headers={"Content-Type": html},
        )
    if name == "image.png":
        return web.Response(body=IMAGE, content_type="image/png")
    if name == "notimage.png":
        return web.Response(body=b"this is not a picture", content_type="image/png")
    if name == "badimage":
        return web.Response(
            content_type="text/html",
            text='<title>Bad image</title><meta property="og:image" content="/notimage.png">',
        )
    if name == "report.pdf":
        return web.Response(
            body=b"%PDF-1.4 ...",
            headers={
                "Content-Type": "application/pdf",
                "Content-Disposition": 'attachment; filename="report.pdf"',
            },
        )
    if name == "big":
        return web.Response(
            content_type="text/html", text="<title>Big</title>" + "x" * (MAX_SIZE * 2)
        )
    if name == "error":
        return web.Response(status=500, text="oops")
    return None


async def _stream(name: str, request: web.Request) -> web.StreamResponse | None:
    """The pages that arrive in pieces: too many of them, or too slowly."""
    html = "text/html; charset=utf-8"
    if name == "big-chunked":
        response = web.StreamResponse(headers={"Content-Type": html})
        await response.prepare(request)
        for _ in range(50):
            await response.write(b"<p>" + b"y" * 8192 + b"</p>")
        return response
    if name == "slow":
        # A slowloris: headers at once, then a byte now and then, forever.
        response = web.StreamResponse(headers={"Content-Type": html})
        await response.prepare(request)
        await response.write(b"<html><head><title>Slow</title>")
        for _ in range(100):
            await asyncio.sleep(0.2)
            await response.write(b" ")
        return response
    return None


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    site = Origin()
    runner = web.AppRunner(site.app())
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    site.base = f"http://127.0.0.1:{port}"
    yield site
    await runner.cleanup()


@pytest.fixture
async def client(homeserver_client: Callable[..., Any]) -> Client:
    return await homeserver_client(**ENABLED)


@pytest.fixture
async def alice(client: Client) -> dict[str, str]:
    return auth_header((await make_user(client, "alice"))[1])


async def preview(
    client: Client, headers: dict[str, str], url: str | None, prefix: str = V1, **params: Any
) -> tuple[int, Any]:
    query = {**params, **({"url": url} if url is not None else {})}
    resp = await client.get(f"{prefix}/preview_url", params=query, headers=headers)
    return resp.status, await resp.json()


async def test_opengraph_page_with_image_stored_and_downloadable(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/og"))
    assert status == 200, body
    assert body["og:title"] == "The real & title"
    assert body["og:description"] == "What the page is about"
    assert body["og:site_name"] == "Example"
    # The page's claim (9999) is replaced by what the image really is.
    assert body["og:image:width"] == 120
    assert body["og:image:height"] == 80
    assert body["og:image:type"] == "image/png"
    assert body["matrix:image:size"] == len(IMAGE)
    assert body["og:image"].startswith("mxc://test.local/")
    assert origin.hits["image.png"] == 1
    media = body["og:image"].removeprefix("mxc://")
    resp = await client.get(f"{V1}/download/{media}", headers=alice)
    assert resp.status == 200
    assert await resp.read() == IMAGE
    assert resp.headers["Content-Type"] == "image/png"


async def test_fallbacks_title_description_and_first_real_image(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/plain"))
    assert status == 200, body
    assert body["og:title"] == "Plain page"
    assert body["og:description"] == "Described by meta"
    # The data: URI and the 16x16 icon are skipped; the content image is fetched.
    assert origin.hits["icon.png"] == 0
    assert origin.hits["image.png"] == 1
    assert body["og:image:width"] == 120


async def test_charset_from_header_and_broken_html(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/latin1"))
    assert (status, body.get("og:title")) == (200, "Café crème")
    status, body = await preview(client, alice, origin.url("/broken"))
    assert status == 200, body
    assert body["og:title"].startswith("Still")


async def test_url_that_is_an_image(client: Client, alice: dict[str, str], origin: Origin) -> None:
    status, body = await preview(client, alice, origin.url("/image.png"))
    assert status == 200, body
    assert body["og:image"].startswith("mxc://test.local/")
    assert (body["og:image:width"], body["og:image:height"]) == (120, 80)
    assert body["matrix:image:size"] == len(IMAGE)


async def test_image_that_is_not_an_image_is_left_out(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/badimage"))
    assert status == 200, body
    assert body == {"og:title": "Bad image"}
    status, body = await preview(client, alice, origin.url("/notimage.png"))
    assert (status, body) == (200, {})


async def test_other_content_gives_its_filename(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/report.pdf"))
    assert (status, body) == (200, {"og:title": "report.pdf"})


async def test_redirects_are_followed(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/redirect2"), prefix=V3)
    assert status == 200, body
    assert body["og:title"] == "The real & title"
    assert origin.hits["redirect"] == 1 and origin.hits["og"] == 1


async def test_bad_redirects_are_refused(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, origin.url("/to-private"))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert origin.hits["og"] == 0
    status, body = await preview(client, alice, origin.url("/loop"))
    assert (status, body["errcode"]) == (502, "M_UNKNOWN")
    assert origin.hits["loop"] == 6  # the first request and five redirects, then no more
    status, body = await preview(client, alice, origin.url("/to-file"))
    assert (status, body["errcode"]) == (502, "M_UNKNOWN")


async def test_size_limit(client: Client, alice: dict[str, str], origin: Origin) -> None:
    for path in ("/big", "/big-chunked"):
        status, body = await preview(client, alice, origin.url(path))
        assert (status, body["errcode"]) == (502, "M_UNKNOWN"), path
        assert "larger than" in body["error"]


async def test_slow_page_times_out(client: Client, alice: dict[str, str], origin: Origin) -> None:
    started = asyncio.get_running_loop().time()
    status, body = await preview(client, alice, origin.url("/slow"))
    assert (status, body["errcode"]) == (502, "M_UNKNOWN")
    assert asyncio.get_running_loop().time() - started < 5


async def test_cache_fetches_a_popular_link_once(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    _, bob_token = await make_user(client, "bob")
    results = await asyncio.gather(
        *(preview(client, alice, origin.url("/og")) for _ in range(3)),
        preview(client, auth_header(bob_token), origin.url("/og#section")),
    )
    assert {status for status, _ in results} == {200}
    first = results[0][1]
    assert all(body == first for _, body in results)
    status, again = await preview(client, alice, origin.url("/og"), ts=1234)
    assert (status, again) == (200, first)
    assert origin.hits["og"] == 1
    assert origin.hits["image.png"] == 1
    # Failures are cached too: the broken site is not asked again at once.
    for _ in range(2):
        status, body = await preview(client, alice, origin.url("/error"))
        assert (status, body["errcode"]) == (502, "M_UNKNOWN")
    assert origin.hits["error"] == 1


async def test_parameters_and_blacklist(
    client: Client, alice: dict[str, str], origin: Origin
) -> None:
    status, body = await preview(client, alice, None)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    for bad in ("ftp://example.com/", "/relative", "http://"):
        status, body = await preview(client, alice, bad)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), bad
    status, body = await preview(client, alice, origin.url("/og"), ts="yesterday")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await preview(client, alice, "http://www.blocked.test/")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await preview(client, alice, origin.url("/secret/plans"))
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert origin.hits["secret"] == 0


async def test_unauthenticated_is_refused(client: Client, origin: Origin) -> None:
    for prefix in (V1, V3):
        status, body = await preview(client, {}, origin.url("/og"), prefix=prefix)
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    assert origin.hits["og"] == 0


async def test_disabled_by_default(homeserver_client: Callable[..., Any], origin: Origin) -> None:
    client = await homeserver_client(**{"media.url_preview.ip_range_whitelist": ["127.0.0.1/32"]})
    headers = auth_header((await make_user(client, "alice"))[1])
    status, body = await preview(client, headers, origin.url("/og"))
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
    assert origin.hits["og"] == 0


async def test_private_addresses_refused_without_whitelist(
    homeserver_client: Callable[..., Any], origin: Origin
) -> None:
    client = await homeserver_client(
        **{"media.url_preview.enabled": True, "rate_limits.enabled": False}
    )
    headers = auth_header((await make_user(client, "alice"))[1])
    # An address literal, and a name that resolves to loopback (checked by the resolver
    # whose answer the connection uses).
    for url in (origin.url("/og"), origin.url("/og").replace("127.0.0.1", "localhost")):
        status, body = await preview(client, headers, url)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), url
    assert origin.hits["og"] == 0


async def test_fetches_are_rate_limited_but_cache_hits_are_not(
    homeserver_client: Callable[..., Any], origin: Origin
) -> None:
    client = await homeserver_client(
        **{
            **ENABLED,
            "rate_limits.enabled": True,
            "rate_limits.url_preview.per_second": 0.01,
            "rate_limits.url_preview.burst": 2,
        }
    )
    headers = auth_header((await make_user(client, "alice"))[1])
    assert (await preview(client, headers, origin.url("/og")))[0] == 200
    assert (await preview(client, headers, origin.url("/plain")))[0] == 200
    for _ in range(3):
        assert (await preview(client, headers, origin.url("/og")))[0] == 200
    status, body = await preview(client, headers, origin.url("/latin1"))
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert origin.hits["latin1"] == 0
