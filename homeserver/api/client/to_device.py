"""`PUT /sendToDevice/{eventType}/{txnId}`: messages straight to other devices."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def send_to_device(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    info = request.match_info
    await homeserver(request).to_device.send(requester, info["eventType"], info["txnId"], body)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "PUT", "/sendToDevice/{eventType}/{txnId}", send_to_device)
