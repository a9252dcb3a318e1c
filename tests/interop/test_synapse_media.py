"""Media across our server and Synapse: each side's users download (and thumbnail)
files a user of the other side uploaded, through their own server's authenticated
media endpoints, so each server fetches from the other over federation."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from contrib.synapse_harness import SynapseInstance
from homeserver.services.homeserver import Homeserver
from homeserver.services.media.remote import filename_from_disposition
from homeserver.storage.media import media as media_store
from tests.interop.clients import User, session

pytestmark = pytest.mark.interop


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 80, 160)).save(out, "PNG")
    return out.getvalue()


async def _upload(user: User, data: bytes, content_type: str, filename: str) -> str:
    async with user.http.post(
        f"{user.base}/_matrix/media/v3/upload",
        data=data,
        params={"filename": filename},
        headers={**user.headers, "Content-Type": content_type},
    ) as resp:
        assert resp.status == 200, await resp.text()
        uri: str = (await resp.json())["content_uri"]
    return uri.removeprefix("mxc://")


async def _get(user: User, path: str, **params: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with user.http.get(
        f"{user.base}/_matrix/client/v1/media/{path}", params=params, headers=user.headers
    ) as resp:
        return resp, await resp.read()


async def _swap(downloader: User, uploader: User) -> None:
    document = b"shared across servers\n" * 500
    ref = await _upload(uploader, document, "text/plain", "shared notes.txt")
    resp, body = await _get(downloader, f"download/{ref}")
    assert resp.status == 200, body[:300]
    assert body == document
    assert resp.headers["Content-Type"].startswith("text/plain")
    # Either server may pick the quoted or the RFC 5987 form of the name.
    assert filename_from_disposition(resp.headers["Content-Disposition"]) == "shared notes.txt"

    image = await _upload(uploader, _png(300, 200), "image/png", "blue.png")
    resp, body = await _get(downloader, f"thumbnail/{image}", width="64", height="64")
    assert resp.status == 200, body[:300]
    width, height = Image.open(io.BytesIO(body)).size
    # Thumbnails may be larger than asked (Synapse serves its 320x240 size here), but
    # never larger than the image, and keep its shape.
    assert width <= 300 and height <= 200 and abs(width / height - 1.5) < 0.1

    resp, body = await _get(downloader, f"download/{ref.split('/')[0]}/noSuchMediaHere")
    assert resp.status == 404, body[:300]


async def test_our_user_downloads_synapse_media(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        await _swap(alice, sam)

        # Synapse makes the thumbnail (its federation thumbnail endpoint): we never
        # fetch the full image for it.
        image = await _upload(sam, _png(900, 600), "image/png", "big.png")
        resp, body = await _get(alice, f"thumbnail/{image}", width="32", height="32")
        assert resp.status == 200, body[:300]
        assert Image.open(io.BytesIO(body)).size[0] < 900
        origin, media_id = image.split("/")
        async with our_server.db.pool.connection() as conn:
            assert await media_store.get_media(conn, origin, media_id) is None


async def test_synapse_user_downloads_our_media(
    synapse: SynapseInstance, our_server: Homeserver
) -> None:
    async with session() as http:
        alice = await User.register(http, our_server, "alice")
        sam = await User.register(http, synapse, "sam")
        await _swap(sam, alice)
