"""Rooms in the admin API, at Synapse's paths and in its shapes: the room list and
details synapse-admin shows, and room deletion as it calls it (v2, in the background,
polled by delete_id), with the older synchronous v1 deletion beside it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.admin.access import (
    admin,
    optional_body,
    query_ascending,
    query_choice,
    query_int,
)
from homeserver.api.context import homeserver
from homeserver.api.errors import invalid_param, json_response
from homeserver.api.http import read_json_object
from homeserver.services.admin import rooms as admin_rooms
from homeserver.services.admin.rooms import DeleteRequest

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


async def list_rooms(request: web.Request) -> web.Response:
    listing = admin_rooms.RoomListing(
        search_term=request.query.get("search_term"),
        order_by=query_choice(request, "order_by", admin_rooms.ORDER_BY, "name"),
        ascending=query_ascending(request),
        offset=query_int(request, "from", 0),
        limit=query_int(request, "limit", 100),
    )
    return json_response(await homeserver(request).admin_rooms.list_rooms(listing))


async def get_room(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_rooms.get_room(request.match_info["room_id"])
    )


async def get_members(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_rooms.members(request.match_info["room_id"])
    )


async def get_state(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_rooms.room_state(request.match_info["room_id"])
    )


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise invalid_param(f"{key} must be a boolean")
    return value


def _delete_request(body: dict[str, Any]) -> DeleteRequest:
    if body.get("new_room_user_id") is not None:
        raise invalid_param("Moving members to a new room (new_room_user_id) is not supported")
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise invalid_param("message must be a string")
    return DeleteRequest(
        block=_flag(body, "block", False),
        purge=_flag(body, "purge", True),
        force_purge=_flag(body, "force_purge", False),
        message=message,
    )


async def delete_room_v2(request: web.Request) -> web.Response:
    requester = admin(request)
    delete = _delete_request(await optional_body(request))
    delete_id = await homeserver(request).admin_rooms.schedule_deletion(
        requester.user_id, request.match_info["room_id"], delete
    )
    return json_response({"delete_id": delete_id})


async def delete_room_v1(request: web.Request) -> web.Response:
    requester = admin(request)
    delete = _delete_request(await optional_body(request))
    done = await homeserver(request).admin_rooms.delete_now(
        requester.user_id, request.match_info["room_id"], delete
    )
    return json_response(done.render(with_id=False)["shutdown_room"])


async def delete_status(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_rooms.deletion_status(request.match_info["delete_id"])
    )


async def room_delete_status(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_rooms.room_deletions(request.match_info["room_id"])
    )


async def get_block(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_rooms.block_status(request.match_info["room_id"])
    )


async def put_block(request: web.Request) -> web.Response:
    requester = admin(request)
    body = await read_json_object(request)
    if "block" not in body:
        raise invalid_param("Missing block")
    block = _flag(body, "block", False)
    await homeserver(request).admin_rooms.set_blocked(
        requester.user_id, request.match_info["room_id"], block
    )
    return json_response({"block": block})


def register(app: web.Application) -> None:
    room = "/rooms/{room_id}"
    app.router.add_get(f"{V1}/rooms", list_rooms)
    app.router.add_get(f"{V1}{room}", get_room)
    app.router.add_get(f"{V1}{room}/members", get_members)
    app.router.add_get(f"{V1}{room}/state", get_state)
    app.router.add_get(f"{V1}{room}/block", get_block)
    app.router.add_put(f"{V1}{room}/block", put_block)
    app.router.add_delete(f"{V1}{room}", delete_room_v1)
    app.router.add_get(f"{V2}/rooms/delete_status/{{delete_id}}", delete_status)
    app.router.add_get(f"{V2}{room}/delete_status", room_delete_status)
    app.router.add_delete(f"{V2}{room}", delete_room_v2)
