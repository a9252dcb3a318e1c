"""Reporting events and rooms to the server's admins."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def report_event(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await homeserver(request).reports.report_event(
        requester, request.match_info["room_id"], request.match_info["event_id"], body
    )
    return json_response({})


async def report_room(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await homeserver(request).reports.report_room(requester, request.match_info["room_id"], body)
    return json_response({})


async def report_user(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await homeserver(request).reports.report_user(requester, request.match_info["user_id"], body)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/users/{user_id}/report", report_user)
    add_client_route(app, "POST", "/rooms/{room_id}/report/{event_id}", report_event)
    add_client_route(app, "POST", "/rooms/{room_id}/report", report_room)
