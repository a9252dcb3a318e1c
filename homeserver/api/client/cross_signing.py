"""Cross-signing: `/keys/device_signing/upload` and `/keys/signatures/upload`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.api.uia import reauthenticate


async def post_device_signing_upload(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    hs = homeserver(request)
    if await hs.cross_signing.upload_needs_auth(requester.user_id, body):
        await reauthenticate(request, body, requester)
    await hs.cross_signing.upload_keys(requester.user_id, body)
    return json_response({})


async def post_signatures_upload(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    result = await homeserver(request).cross_signing.upload_signatures(requester.user_id, body)
    return json_response(result)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/keys/device_signing/upload", post_device_signing_upload)
    add_client_route(app, "POST", "/keys/signatures/upload", post_signatures_upload)
