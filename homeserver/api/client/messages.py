"""Room history: /messages, /context and /timestamp_to_event."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.routes import add_client_route


async def get_messages(request: web.Request) -> web.Response:
    requester = await require_user(request)
    query = request.query
    body = await homeserver(request).messages.messages(
        requester,
        request.match_info["room_id"],
        from_token=query.get("from"),
        to_token=query.get("to"),
        direction=query.get("dir"),
        limit=query.get("limit"),
        filter_json=query.get("filter"),
    )
    return json_response(body)


async def get_context(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await homeserver(request).messages.context(
        requester,
        request.match_info["room_id"],
        request.match_info["event_id"],
        limit=request.query.get("limit"),
        filter_json=request.query.get("filter"),
    )
    return json_response(body)


async def timestamp_to_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await homeserver(request).messages.timestamp_to_event(
        requester,
        request.match_info["room_id"],
        ts=request.query.get("ts"),
        direction=request.query.get("dir"),
    )
    return json_response(body)


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/rooms/{room_id}/messages", get_messages)
    add_client_route(app, "GET", "/rooms/{room_id}/context/{event_id}", get_context)
    add_client_route(
        app,
        "GET",
        "/rooms/{room_id}/timestamp_to_event",
        timestamp_to_event,
        versions=("v1",),
    )
