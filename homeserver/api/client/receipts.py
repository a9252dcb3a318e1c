"""Receipts and the read marker: `/rooms/{roomId}/receipt/...` and `/read_markers`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def send_receipt(request: web.Request) -> web.Response:
    requester = await require_user(request)
    # The body is required, but older clients send none for unthreaded receipts.
    body = await read_json_object(request) if await request.read() else {}
    hs = homeserver(request)
    info = request.match_info
    await hs.receipts.send_receipt(
        requester, info["roomId"], info["receiptType"], info["eventId"], body
    )
    await hs.presence.user_active(requester.user_id)
    return json_response({})


async def set_read_markers(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    hs = homeserver(request)
    await hs.receipts.set_read_markers(requester, request.match_info["roomId"], body)
    await hs.presence.user_active(requester.user_id)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", send_receipt)
    add_client_route(app, "POST", "/rooms/{roomId}/read_markers", set_read_markers)
