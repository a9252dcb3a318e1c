"""`POST /createRoom` and `GET /joined_rooms`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.accounts.auth import check_not_suspended
from homeserver.services.rooms.creation import parse_create_room


async def create_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    hs = homeserver(request)
    body = await read_json_object(request)
    check_not_suspended(requester)
    await hs.ratelimit.check("room_creation", requester.user_id, requester)
    create = parse_create_room(body)
    if create.room_alias_name is not None and hs.appservices_registry.services:
        hs.appservices_registry.check_alias_allowed(
            f"#{create.room_alias_name}:{hs.server_name}",
            hs.appservices_registry.by_id.get(requester.appservice_id or ""),
        )
    for invitee in create.invite:
        await hs.appservices_sender.check_invitee(invitee)
    room_id, _ = await hs.creation.create(requester.user_id, create)
    return json_response({"room_id": room_id})


async def joined_rooms(request: web.Request) -> web.Response:
    requester = await require_user(request)
    rooms = await homeserver(request).membership.joined_rooms(requester.user_id)
    return json_response({"joined_rooms": rooms})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/createRoom", create_room)
    add_client_route(app, "GET", "/joined_rooms", joined_rooms)
