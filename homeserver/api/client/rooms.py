"""`POST /createRoom`, `GET /joined_rooms` and the rooms two users share (MSC2666)."""

from __future__ import annotations

from aiohttp import web

from federation.identifiers import is_user_id
from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, invalid_param, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import CLIENT_PREFIX, add_client_route
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


MUTUAL_ROOMS_PAGE = 100
# Synapse serves MSC2666 under this prefix, and clients (Element) still call it there.
MUTUAL_ROOMS_UNSTABLE = f"{CLIENT_PREFIX}/unstable/uk.half-shot.msc2666/user/mutual_rooms"


async def mutual_rooms(request: web.Request) -> web.Response:
    requester = await require_user(request)
    other = request.query.get("user_id")
    if other is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing user_id")
    if not is_user_id(other):
        raise invalid_param("user_id is not a valid user ID")
    if other == requester.user_id:
        raise invalid_param("user_id is your own user ID")
    after = request.query.get("from")
    if after is not None and not after.startswith("!"):
        raise invalid_param("Unknown from token")
    rooms, count, next_batch = await homeserver(request).membership.mutual_rooms(
        requester.user_id, other, after, MUTUAL_ROOMS_PAGE
    )
    body: dict[str, object] = {"joined": rooms, "count": count}
    if next_batch is not None:
        body["next_batch"] = next_batch
    return json_response(body)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/createRoom", create_room)
    add_client_route(app, "GET", "/joined_rooms", joined_rooms)
    add_client_route(app, "GET", "/mutual_rooms", mutual_rooms, versions=("v1",))
    add_client_route(app, "GET", "/user/mutual_rooms", mutual_rooms, versions=("v1",))
    app.router.add_get(MUTUAL_ROOMS_UNSTABLE, mutual_rooms)
