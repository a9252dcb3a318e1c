"""The media repository for clients: uploads (`/_matrix/media/v3/upload`, async uploads
via `/_matrix/media/v1/create`), the upload limit, and downloads and thumbnails, both
authenticated (`/_matrix/client/v1/media/...`) and legacy (`/_matrix/media/v3/...`,
which the spec leaves unauthenticated and which do not serve media uploaded while
`enable_authenticated_media` is on), and link previews (`preview_url`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from homeserver.api import sso_pages
from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import own_body_limit
from homeserver.api.routes import RouteHandler
from homeserver.services.media.repository import (
    UPLOAD_LIMIT_PAGE,
    StoredFile,
    check_filename,
    content_disposition,
    download_headers,
    parse_timeout_ms,
)
from homeserver.services.media.thumbnails import parse_request

CHUNK = 64 * 1024
CLIENT_V1_MEDIA = "/_matrix/client/v1/media"
LEGACY_PREFIXES = ("/_matrix/media/v3", "/_matrix/media/r0")


def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (a client that goes away mid-upload cancels the
    handler, and the service drops the partial file)."""
    return request.content.iter_chunked(CHUNK)


def _allow_remote(request: web.Request) -> bool:
    """Whether a legacy request may fetch remote media: never with authenticated
    media on (as Synapse: what it would fetch now would be authenticated media)."""
    raw = request.query.get("allow_remote", "true")
    if raw not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "allow_remote must be true or false")
    return raw == "true" and not homeserver(request).media_repository.authenticated_media


@own_body_limit
async def upload(request: web.Request) -> web.Response:
    requester = await require_user(request)
    uri = await homeserver(request).media_repository.upload(
        requester.user_id,
        _body(request),
        request.content_length,
        request.headers.get("Content-Type"),
        request.query.get("filename"),
    )
    return json_response({"content_uri": uri})


async def create(request: web.Request) -> web.Response:
    requester = await require_user(request)
    uri, expires = await homeserver(request).media_repository.create(requester.user_id)
    return json_response({"content_uri": uri, "unused_expires_at": expires})


@own_body_limit
async def upload_to(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await homeserver(request).media_repository.upload_to(
        requester.user_id,
        request.match_info["serverName"],
        request.match_info["mediaId"],
        _body(request),
        request.content_length,
        request.headers.get("Content-Type"),
        request.query.get("filename"),
    )
    return json_response({})


async def config(request: web.Request) -> web.Response:
    await require_user(request)
    return json_response(homeserver(request).media_repository.config())


def file_response(stored: StoredFile, filename: str | None = None) -> web.FileResponse:
    """The stored bytes with the spec's headers; FileResponse streams from disk (with
    sendfile where it can) and answers Range requests, which media players use."""
    headers = download_headers(stored.content_type, filename or stored.filename)
    return web.FileResponse(stored.path, headers=headers)


async def _download(
    request: web.Request, allow_remote: bool, legacy: bool = False
) -> web.FileResponse:
    stored = await homeserver(request).media_repository.download(
        request.match_info["serverName"],
        request.match_info["mediaId"],
        timeout_ms=parse_timeout_ms(request.query.get("timeout_ms")),
        allow_remote=allow_remote,
        legacy=legacy,
    )
    return file_response(stored, check_filename(request.match_info.get("fileName")))


async def download(request: web.Request) -> web.FileResponse:
    await require_user(request)
    return await _download(request, allow_remote=True)


async def legacy_download(request: web.Request) -> web.FileResponse:
    return await _download(request, allow_remote=_allow_remote(request), legacy=True)


async def _thumbnail(
    request: web.Request, allow_remote: bool, legacy: bool = False
) -> web.FileResponse:
    query = request.query
    wanted = parse_request(
        query.get("width"), query.get("height"), query.get("method"), query.get("animated")
    )
    stored = await homeserver(request).thumbnails.thumbnail(
        request.match_info["serverName"],
        request.match_info["mediaId"],
        wanted,
        timeout_ms=parse_timeout_ms(query.get("timeout_ms")),
        allow_remote=allow_remote,
        legacy=legacy,
    )
    response = file_response(stored)
    # Thumbnails are always images we made: the spec wants them inline.
    response.headers["Content-Disposition"] = content_disposition("inline", stored.filename)
    return response


async def thumbnail(request: web.Request) -> web.FileResponse:
    await require_user(request)
    return await _thumbnail(request, allow_remote=True)


async def legacy_thumbnail(request: web.Request) -> web.FileResponse:
    return await _thumbnail(request, allow_remote=_allow_remote(request), legacy=True)


async def preview_url(request: web.Request) -> web.Response:
    """A link preview (both the v1 and the deprecated v3 path need authentication).
    `ts` is validated but otherwise unused: only the latest preview of a URL is kept."""
    hs = homeserver(request)
    if not hs.url_previews.enabled:
        # As if the endpoint did not exist, which is how clients learn previews are off.
        raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are disabled on this server")
    requester = await require_user(request)
    url = request.query.get("url")
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing url parameter")
    ts = request.query.get("ts")
    if ts is not None and not ts.lstrip("-").isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be an integer")

    async def rate_limit() -> None:
        await hs.ratelimit.check("url_preview", requester.user_id, requester)

    return json_response(await hs.url_previews.preview(url, before_fetch=rate_limit))


async def upload_limit_page(request: web.Request) -> web.Response:
    """Where a refused upload's `info_uri` points when its limit names no page."""
    return sso_pages.page(
        "Upload limit reached",
        "<p>You have uploaded as much as this server allows for now. Wait a while before"
        " uploading more, or ask the server's administrators.</p>",
    )


def register(app: web.Application) -> None:
    media_ref = "{serverName}/{mediaId}"
    add = app.router.add_route
    routes: list[tuple[str, str, RouteHandler]] = [
        ("GET", f"{CLIENT_V1_MEDIA}/config", config),
        ("GET", f"{CLIENT_V1_MEDIA}/download/{media_ref}", download),
        ("GET", f"{CLIENT_V1_MEDIA}/download/{media_ref}/{{fileName}}", download),
        ("GET", f"{CLIENT_V1_MEDIA}/thumbnail/{media_ref}", thumbnail),
        ("GET", f"{CLIENT_V1_MEDIA}/preview_url", preview_url),
        ("POST", "/_matrix/media/v1/create", create),
        ("PUT", f"/_matrix/media/v3/upload/{media_ref}", upload_to),
        ("GET", UPLOAD_LIMIT_PAGE, upload_limit_page),
    ]
    for prefix in LEGACY_PREFIXES:
        routes += [
            ("POST", f"{prefix}/upload", upload),
            ("GET", f"{prefix}/config", config),
            ("GET", f"{prefix}/download/{media_ref}", legacy_download),
            ("GET", f"{prefix}/download/{media_ref}/{{fileName}}", legacy_download),
            ("GET", f"{prefix}/thumbnail/{media_ref}", legacy_thumbnail),
            ("GET", f"{prefix}/preview_url", preview_url),
        ]
    for method, path, handler in routes:
        add(method, path, handler)
