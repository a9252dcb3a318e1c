"""Reading rooms: state, single events, and members."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.routes import add_client_route


async def get_state(request: web.Request) -> web.Response:
    requester = await require_user(request)
    events = await homeserver(request).rooms_state.room_state(
        requester, request.match_info["room_id"]
    )
    return json_response(events)


async def get_state_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    fmt = request.query.get("format", "content")
    if fmt not in ("content", "event"):
        raise MatrixError(400, "M_INVALID_PARAM", "format must be 'content' or 'event'")
    body = await homeserver(request).rooms_state.state_event(
        requester,
        request.match_info["room_id"],
        request.match_info["event_type"],
        request.match_info.get("state_key", ""),
        as_event=fmt == "event",
    )
    return json_response(body)


async def get_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    event = await homeserver(request).messages.get_event(
        requester,
        request.match_info["room_id"],
        request.match_info["event_id"],
    )
    return json_response(event)


async def get_members(request: web.Request) -> web.Response:
    requester = await require_user(request)
    chunk = await homeserver(request).rooms_state.members(
        requester,
        request.match_info["room_id"],
        at=request.query.get("at"),
        membership=request.query.get("membership"),
        not_membership=request.query.get("not_membership"),
    )
    return json_response({"chunk": chunk})


async def get_joined_members(request: web.Request) -> web.Response:
    requester = await require_user(request)
    joined = await homeserver(request).rooms_state.joined_members(
        requester, request.match_info["room_id"]
    )
    return json_response({"joined": joined})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/rooms/{room_id}/state", get_state)
    add_client_route(app, "GET", "/rooms/{room_id}/state/{event_type}", get_state_event)
    add_client_route(
        app, "GET", "/rooms/{room_id}/state/{event_type}/{state_key:.*}", get_state_event
    )
    add_client_route(app, "GET", "/rooms/{room_id}/event/{event_id}", get_event)
    add_client_route(app, "GET", "/rooms/{room_id}/members", get_members)
    add_client_route(app, "GET", "/rooms/{room_id}/joined_members", get_joined_members)
