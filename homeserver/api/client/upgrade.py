"""`POST /rooms/{roomId}/upgrade`: replace a room with one of another room version."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def upgrade_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    new_version = body.get("new_version")
    if not isinstance(new_version, str):
        raise MatrixError(400, "M_BAD_JSON", "new_version must be a string")
    hs = homeserver(request)
    await hs.ratelimit.check("room_creation", requester.user_id, requester)
    replacement = await hs.upgrade.upgrade(
        requester, request.match_info["room_id"], new_version, body.get("additional_creators")
    )
    return json_response({"replacement_room": replacement})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/rooms/{room_id}/upgrade", upgrade_room)
