"""Files as matrix-nio sends and fetches them: upload, then download and thumbnail by
another user (nio uses the authenticated /_matrix/client/v1/media endpoints)."""

from __future__ import annotations

import io

from nio import (
    AsyncClient,
    DownloadError,
    MemoryDownloadResponse,
    RegisterResponse,
    ThumbnailResponse,
    UploadResponse,
)
from PIL import Image


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (250, 200, 0)).save(out, "PNG")
    return out.getvalue()


async def test_upload_download_thumbnail(running_homeserver: str) -> None:
    alice = AsyncClient(running_homeserver, "alice")
    bob = AsyncClient(running_homeserver, "bob")
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            registered = await client.register(name, "correct horse")
            assert isinstance(registered, RegisterResponse), registered

        document = b"minutes of the meeting\n" * 1000
        uploaded, keys = await alice.upload(
            io.BytesIO(document),
            content_type="text/plain",
            filename="minutes.txt",
            filesize=len(document),
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        assert keys is None
        assert uploaded.content_uri.startswith("mxc://localhost/")

        got = await bob.download(uploaded.content_uri)
        assert isinstance(got, MemoryDownloadResponse), got
        assert got.body == document
        assert got.content_type.startswith("text/plain")
        assert got.filename == "minutes.txt"

        image = _png(640, 480)
        uploaded, _ = await alice.upload(
            io.BytesIO(image), content_type="image/png", filename="pic.png", filesize=len(image)
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        server, media_id = uploaded.content_uri.removeprefix("mxc://").split("/")
        thumb = await bob.thumbnail(server, media_id, 96, 96)
        assert isinstance(thumb, ThumbnailResponse), thumb
        assert thumb.content_type == "image/png"
        assert Image.open(io.BytesIO(thumb.body)).size == (96, 72)

        missing = await bob.download("mxc://localhost/noSuchMedia")
        assert isinstance(missing, DownloadError)
        assert missing.status_code == "M_NOT_FOUND"
    finally:
        await alice.close()
        await bob.close()
