"""Our media for other servers: `/_matrix/federation/v1/media/download/{mediaId}` and
`/thumbnail/{mediaId}`, answered as the spec's multipart/mixed (a JSON metadata part,
then the bytes). The federation middleware has already checked the X-Matrix signature;
only media of our own origin is served (never a proxy for a third server)."""

from __future__ import annotations

import secrets

from aiohttp import web

from homeserver.api.context import homeserver
from homeserver.services.media.repository import (
    StoredFile,
    content_disposition,
    download_headers,
    parse_timeout_ms,
)
from homeserver.services.media.thumbnails import parse_request

V1_MEDIA = "/_matrix/federation/v1/media"


async def _multipart(
    request: web.Request, stored: StoredFile, disposition: str | None = None
) -> web.StreamResponse:
    """Stream the two parts: `{}` as application/json, then the file with its headers."""
    boundary = secrets.token_hex(16)
    headers = download_headers(stored.content_type, stored.filename)
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    part_headers = "".join(
        f"{name}: {headers[name]}\r\n" for name in ("Content-Type", "Content-Disposition")
    )
    head = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n"
        f"--{boundary}\r\n{part_headers}\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    response = web.StreamResponse(headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
    response.content_length = len(head) + stored.size + len(tail)
    await response.prepare(request)
    await response.write(head)
    async for chunk in homeserver(request).media_repository.files.read_chunks(stored.sha256):
        await response.write(chunk)
    await response.write(tail)
    await response.write_eof()
    return response


async def download(request: web.Request) -> web.StreamResponse:
    hs = homeserver(request)
    stored = await hs.media_repository.download(
        hs.server_name,
        request.match_info["mediaId"],
        timeout_ms=parse_timeout_ms(request.query.get("timeout_ms")),
        allow_remote=False,
    )
    return await _multipart(request, stored)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    hs = homeserver(request)
    query = request.query
    wanted = parse_request(
        query.get("width"), query.get("height"), query.get("method"), query.get("animated")
    )
    stored = await hs.thumbnails.thumbnail(
        hs.server_name,
        request.match_info["mediaId"],
        wanted,
        timeout_ms=parse_timeout_ms(query.get("timeout_ms")),
        allow_remote=False,
    )
    return await _multipart(request, stored, content_disposition("inline", stored.filename))


def register(app: web.Application) -> None:
    app.router.add_get(f"{V1_MEDIA}/download/{{mediaId}}", download)
    app.router.add_get(f"{V1_MEDIA}/thumbnail/{{mediaId}}", thumbnail)
