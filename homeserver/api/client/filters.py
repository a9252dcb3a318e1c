"""`/user/{userId}/filter`: upload a filter once, then name it by id in /sync."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def create_filter(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    filter_id = await homeserver(request).filters.create_filter(
        requester, request.match_info["userId"], body
    )
    return json_response({"filter_id": filter_id})


async def get_filter(request: web.Request) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    definition = await homeserver(request).filters.get_filter_definition(
        requester, info["userId"], info["filterId"]
    )
    return json_response(definition)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/user/{userId}/filter", create_filter)
    add_client_route(app, "GET", "/user/{userId}/filter/{filterId}", get_filter)
